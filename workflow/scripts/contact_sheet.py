"""Adapter: rule contact_sheet -> medrepro.prepare.contact_sheet."""
from pathlib import Path

from medrepro import prepare
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    stem = Path(snakemake.output[0]).with_suffix("")
    prepare.contact_sheet(snakemake.input.manifest, snakemake.wildcards.dataset, stem, snakemake.params.per_class,
                           snakemake.params.style, snakemake.params.scale, snakemake.params.seed)
