"""Adapter: rule evaluate -> medrepro.classify.steps.evaluate."""
from medrepro.classify import steps
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    steps.evaluate(snakemake.input.predictions, snakemake.input.history, snakemake.params.experiment,
                   snakemake.output[0], summary_csv=snakemake.input.summary, split_csv=snakemake.input.split,
                   bootstrap=snakemake.params.bootstrap)
