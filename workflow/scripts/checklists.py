"""Adapter: rule checklists -> medrepro.publish.checklist.write_checklists."""
from medrepro.io import logging_to
from medrepro.publish.checklist import write_checklists

with logging_to(snakemake.log[0]):
    write_checklists(snakemake.input.checklists, snakemake.params.papers, snakemake.params.results,
                     snakemake.output[0], snakemake.params.scale)
