"""Adapter: rule train -> medrepro.classify.steps.train (data-parallel when the rule has several GPUs)."""
import torch

from medrepro import distributed
from medrepro.classify import steps
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    torch.set_num_threads(max(1, snakemake.threads))
    distributed.launch(snakemake.params.experiment["train"]["gpus"], steps.train, snakemake.input.split,
                       snakemake.params.experiment, snakemake.output.model, snakemake.output.history,
                       checkpoint=snakemake.params.checkpoint, summary_out=snakemake.output.summary,
                       features=snakemake.input.get("features"), weights=snakemake.params.weights,
                       backbone_seed=snakemake.params.backbone_seed, log=snakemake.log[0])
