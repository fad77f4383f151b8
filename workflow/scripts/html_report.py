"""Adapter: rule html_report -> medrepro.publish.html.write_site."""
from medrepro.io import logging_to
from medrepro.publish.html import write_site

with logging_to(snakemake.log[0]):
    write_site(snakemake.input.report, dict(zip(snakemake.params.papers, snakemake.input.papers)), snakemake.output[0])
