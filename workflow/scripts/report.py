"""Adapter: rule report -> medrepro.publish.report.report."""
from medrepro.io import logging_to
from medrepro.publish.report import report

with logging_to(snakemake.log[0]):
    report(snakemake.params.papers, dict(zip(snakemake.params.papers, snakemake.input.papers)), snakemake.output[0],
           scale=snakemake.params.scale, audit_dirs=dict(zip(snakemake.params.papers, snakemake.input.audits)),
           leakage_dir=snakemake.input.leakage, repeats_dir=(snakemake.input.repeats or [None])[0],
           inflation_dir=(snakemake.input.inflation or [None])[0], probes=snakemake.params.probes,
           checklists_dir=(snakemake.input.checklists or [None])[0])
