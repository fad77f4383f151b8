"""Adapter: rule predict_detector -> medrepro.detect.steps.predict."""
import torch

from medrepro.detect import steps as detect_steps
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    torch.set_num_threads(max(1, snakemake.threads))
    detect_steps.predict(snakemake.params.annotations, snakemake.input.model, snakemake.params.experiment,
                            snakemake.output.test, snakemake.output.val)
