"""Adapter: rule publish_paper -> medrepro.publish.paper.publish_paper."""
from medrepro.io import logging_to
from medrepro.publish.paper import publish_paper

with logging_to(snakemake.log[0]):
    inputs = {}
    for key, path in snakemake.input.items():
        exp, kind = key.split("__")
        inputs.setdefault(exp, {})[kind] = path
    publish_paper(snakemake.wildcards.paper, snakemake.params.paper, inputs, snakemake.output[0],
                  style=snakemake.params.style, scale=snakemake.params.scale, captions=snakemake.params.captions,
                  verdict=snakemake.params.verdict)
