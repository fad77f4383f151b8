"""Adapter: rule synthesize -> medrepro.pipeline.synthesize."""
from medrepro import pipeline
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    pipeline.synthesize(snakemake.wildcards.dataset, snakemake.output[0], snakemake.params.synthetic,
                        snakemake.params.seed, snakemake.threads)
