"""Adapter: rule predict -> medrepro.classify.steps.predict."""
import torch

from medrepro.classify import steps
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    torch.set_num_threads(max(1, snakemake.threads))
    steps.predict(snakemake.input.split, snakemake.input.model, snakemake.params.experiment, snakemake.output[0],
                     features=snakemake.input.get("features"))
