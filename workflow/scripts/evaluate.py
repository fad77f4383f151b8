"""Adapter: rule evaluate -> medrepro.pipeline.evaluate."""
from medrepro import pipeline
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    pipeline.evaluate(snakemake.input.predictions, snakemake.input.history, snakemake.params.experiment,
                      snakemake.output[0], snakemake.input.summary, snakemake.input.split,
                      snakemake.params.bootstrap)
