"""Tests of the classify wing (src/medrepro/classify/)."""
