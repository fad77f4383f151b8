"""Adapter: rule download_weights -> medrepro.download.fetch_torchvision_weights."""
from medrepro.download import fetch_torchvision_weights
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    fetch_torchvision_weights(snakemake.wildcards.backbone, snakemake.output[0])
