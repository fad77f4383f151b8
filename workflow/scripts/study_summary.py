"""Adapter: rule study_summary -> medrepro.study.summarize."""
from pathlib import Path

from medrepro import study
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    dirs = {k + 1: str(Path(r).parent) for k, r in enumerate(snakemake.input.runs)}
    study.summarize(snakemake.wildcards.study, snakemake.params.study, snakemake.input.split, dirs,
                    snakemake.output[0], snakemake.params.bootstrap)
