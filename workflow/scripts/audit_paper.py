"""Adapter: rule audit_paper -> medrepro.publish.audit.write_audit."""
from medrepro.io import logging_to
from medrepro.publish.audit import write_audit

with logging_to(snakemake.log[0]):
    write_audit(snakemake.input.published, snakemake.output[0], snakemake.wildcards.paper)
