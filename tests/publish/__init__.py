"""Tests of the publish wing (src/medrepro/publish/)."""
