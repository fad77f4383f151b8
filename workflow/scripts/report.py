"""Adapter: rule report -> medrepro.pipeline.report."""
from medrepro import pipeline

with pipeline.logging_to(snakemake.log[0]):
    dirs = {p: f"{snakemake.params.results}/papers/{p}" for p in snakemake.params.papers}
    pipeline.report(snakemake.params.papers, dirs, snakemake.output[0], snakemake.params.scale)
