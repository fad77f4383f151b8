"""Adapter: rule study_summary -> medrepro.study.summary.summarize."""
from pathlib import Path

from medrepro.io import logging_to
from medrepro.study.summary import summarize

with logging_to(snakemake.log[0]):
    dirs = {k + 1: str(Path(r).parent) for k, r in enumerate(snakemake.input.runs)}
    summarize(snakemake.wildcards.study, snakemake.params.study, snakemake.input.split, dirs,
                    snakemake.output[0], snakemake.params.bootstrap)
