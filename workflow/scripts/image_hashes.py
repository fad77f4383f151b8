"""Adapter: rule image_hashes -> medrepro.leakage.hash_images."""
from medrepro.io import logging_to, write_csv
from medrepro.leakage import hash_images

with logging_to(snakemake.log[0]):
    write_csv(snakemake.output[0], hash_images(snakemake.input[0]))
