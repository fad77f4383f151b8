"""Adapter: rule annotate -> medrepro.detect_pipeline.annotate."""
from medrepro import detect_pipeline
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    detect_pipeline.annotate(snakemake.input.split, snakemake.params.experiment, snakemake.params.out_dir)
