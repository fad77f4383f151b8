"""Adapter: rule annotate -> medrepro.detect.steps.annotate."""
from medrepro.detect import steps as detect_steps
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    detect_steps.annotate(snakemake.input.split, snakemake.params.mask_shape, snakemake.params.out_dir)
