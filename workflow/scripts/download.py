"""Adapter: rule download -> medrepro.download.fetch_dataset."""
from medrepro import pipeline
from medrepro.download import fetch_dataset

with pipeline.logging_to(snakemake.log[0]):
    fetch_dataset(snakemake.params.spec, snakemake.output.raw, snakemake.output.checksums)
