"""Adapter: rule checklists -> medrepro.publish.checklist.write_checklists (the results folder: the
output's parent, where the files it looks for are)."""
from pathlib import Path

from medrepro.io import logging_to
from medrepro.publish.checklist import write_checklists

with logging_to(snakemake.log[0]):
    write_checklists(snakemake.input.checklists, snakemake.params.papers, Path(snakemake.output[0]).parent,
                     snakemake.output[0], snakemake.params.scale)
