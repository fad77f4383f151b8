"""Tests of the detect wing (src/medrepro/detect/)."""
