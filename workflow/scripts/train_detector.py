"""Adapter: rule train_detector -> medrepro.detect.steps.train."""
import torch

from medrepro.detect import steps as detect_steps
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    torch.set_num_threads(max(1, snakemake.threads))
    detect_steps.train(snakemake.params.annotations, snakemake.params.experiment, snakemake.output.model,
                          snakemake.output.history, snakemake.output.summary, snakemake.params.checkpoint,
                          weights=snakemake.input.get("weights"))
