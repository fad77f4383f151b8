"""Adapter: rule convert -> medrepro.pipeline.convert."""
from medrepro import pipeline
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    c = snakemake.params.convert
    pipeline.convert(snakemake.input.manifest, snakemake.output.images, snakemake.output.manifest,
                     snakemake.output.rejected, c["channels"], c["max_side"], snakemake.threads)
