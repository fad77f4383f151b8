"""Adapter: rule publish_paper -> medrepro.pipeline.publish_classification_paper."""
from medrepro import pipeline

with pipeline.logging_to(snakemake.log[0]):
    inputs = {}
    for key, path in snakemake.input.items():
        exp, kind = key.split("__")
        inputs.setdefault(exp, {})[kind] = path
    pipeline.publish_classification_paper(snakemake.wildcards.paper, snakemake.params.paper,
                                          snakemake.params.experiments, inputs, snakemake.output[0],
                                          snakemake.params.style, snakemake.params.scale)
