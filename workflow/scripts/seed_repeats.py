"""Adapter: rule seed_repeats -> medrepro.publish.compare.write_repeats."""
from medrepro.io import logging_to
from medrepro.publish.compare import write_repeats

with logging_to(snakemake.log[0]):
    write_repeats(snakemake.params.headlines, snakemake.params.runs, snakemake.output[0], snakemake.params.scale)
