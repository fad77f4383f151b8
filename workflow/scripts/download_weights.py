"""Adapter: rule download_weights -> medrepro.download.fetch_torchvision_weights."""
from medrepro import pipeline
from medrepro.download import fetch_torchvision_weights

with pipeline.logging_to(snakemake.log[0]):
    fetch_torchvision_weights(snakemake.wildcards.backbone, snakemake.output[0])
