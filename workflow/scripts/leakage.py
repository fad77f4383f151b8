"""Adapter: rule leakage -> medrepro.leakage.write_leakage."""
from medrepro.io import logging_to
from medrepro.leakage import write_leakage

with logging_to(snakemake.log[0]):
    p = snakemake.params
    names = p.dataset_names
    write_leakage(splits=dict(zip(p.names, zip(snakemake.input.splits, snakemake.input.audits))),
                  datasets=p.datasets, hash_files=dict(zip(names, snakemake.input.hashes)),
                  out_dir=snakemake.output[0], max_distance=p.leakage["max_distance"],
                  across=p.leakage["across"], synthetic=p.synthetic,
                  manifests=dict(zip(names, snakemake.input.manifests)), scale=p.scale)
