"""Adapter: rule convert -> medrepro.prepare.convert."""
from medrepro import prepare
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    c = snakemake.params.convert
    prepare.convert(snakemake.input.manifest, snakemake.output.images, snakemake.output.manifest,
                     snakemake.output.rejected, c["channels"], c["max_side"], snakemake.threads)
