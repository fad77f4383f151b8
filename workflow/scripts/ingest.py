"""Adapter: rule ingest -> medrepro.pipeline.ingest."""
from medrepro import pipeline
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    pipeline.ingest(snakemake.wildcards.dataset, snakemake.input.raw, snakemake.output.manifest,
                    snakemake.output.rejected, snakemake.threads, checksums=snakemake.input.get("checksums"))
