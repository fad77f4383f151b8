"""Adapter: rule report -> medrepro.pipeline.report."""
from medrepro import pipeline

with pipeline.logging_to(snakemake.log[0]):
    dirs = dict(zip(snakemake.params.papers, snakemake.input))
    pipeline.report(snakemake.params.papers, dirs, snakemake.output[0], snakemake.params.scale)
