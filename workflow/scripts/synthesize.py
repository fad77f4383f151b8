"""Adapter: rule synthesize -> medrepro.prepare.synthesize."""
from medrepro import prepare
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    prepare.synthesize(snakemake.wildcards.dataset, snakemake.output[0], snakemake.params.synthetic,
                        snakemake.params.seed, snakemake.threads, copy_roots=dict(snakemake.input.items()))
