"""Adapter: rule audit_paper -> medrepro.audit.write_audit."""
from medrepro.audit import write_audit
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    write_audit(snakemake.input.published, snakemake.output[0], snakemake.wildcards.paper)
