"""Adapter: rule inflation -> medrepro.inflation.write_inflation."""
from medrepro.inflation import write_inflation
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    write_inflation(snakemake.params.pairs, snakemake.output[0], snakemake.params.bootstrap, snakemake.params.scale)
