"""Adapter: rule download_weights -> medrepro.download.fetch_torchvision_weights (.pth) or
fetch_keras_weights (.h5)."""
from medrepro.download import fetch_keras_weights, fetch_torchvision_weights
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    fetch = fetch_keras_weights if snakemake.wildcards.fmt == "h5" else fetch_torchvision_weights
    fetch(snakemake.wildcards.backbone, snakemake.output[0])
