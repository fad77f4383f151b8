"""Adapter: rule html_report -> medrepro.html_report.write_site."""
from medrepro.html_report import write_site
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    write_site(snakemake.input.report, dict(zip(snakemake.params.papers, snakemake.input.papers)), snakemake.output[0])
