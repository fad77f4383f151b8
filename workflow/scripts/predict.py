"""Adapter: rule predict -> medrepro.pipeline.predict."""
from medrepro import pipeline

with pipeline.logging_to(snakemake.log[0]):
    pipeline.predict(snakemake.input.split, snakemake.input.model, snakemake.params.experiment, snakemake.output[0],
                     features=snakemake.input.get("features"))
