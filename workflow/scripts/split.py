"""Adapter: rule split -> medrepro.prepare.split."""
from medrepro import prepare
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    prepare.split(snakemake.input.manifest, snakemake.params.experiment, snakemake.output.split,
                   snakemake.output.audit)
