"""Adapter: rule source_probe -> medrepro.probe.write_probe."""
from medrepro.io import logging_to
from medrepro.probe import write_probe

with logging_to(snakemake.log[0]):
    write_probe(snakemake.input[0], snakemake.output[0], snakemake.wildcards.dataset,
                confidence=snakemake.params.confidence, scale=snakemake.params.scale, **snakemake.params.probe)
