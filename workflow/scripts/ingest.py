"""Adapter: rule ingest -> medrepro.prepare.ingest."""
from medrepro import prepare
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    prepare.ingest(snakemake.wildcards.dataset, snakemake.input.raw, snakemake.output.manifest,
                    snakemake.output.rejected, snakemake.threads, checksums=snakemake.input.get("checksums"))
