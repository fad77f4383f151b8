"""Adapter: rule synthesize -> medrepro.pipeline.synthesize."""
from medrepro import pipeline

with pipeline.logging_to(snakemake.log[0]):
    pipeline.synthesize(snakemake.wildcards.dataset, snakemake.output[0], snakemake.params.synthetic,
                        snakemake.params.seed, snakemake.threads)
