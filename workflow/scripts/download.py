"""Adapter: rule download -> medrepro.download.fetch_dataset."""
from medrepro.download import fetch_dataset
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    fetch_dataset(snakemake.params.spec, snakemake.output.raw, snakemake.output.checksums)
