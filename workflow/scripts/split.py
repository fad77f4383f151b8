"""Adapter: rule split -> medrepro.pipeline.split."""
from medrepro import pipeline
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    pipeline.split(snakemake.input.manifest, snakemake.params.experiment, snakemake.output.split,
                   snakemake.output.audit)
