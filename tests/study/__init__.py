"""Tests of the study wing (src/medrepro/study/)."""
