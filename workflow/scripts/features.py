"""Adapter: rule features -> medrepro.classify.features.extract_features."""
import torch

from medrepro.classify.features import extract_features
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    torch.set_num_threads(max(1, snakemake.threads))
    extract_features(snakemake.input.manifest, snakemake.params.model, snakemake.input.get("weights"),
                     snakemake.params.seed, snakemake.output[0], snakemake.params.train)
