"""Adapter: rule evaluate_detector -> medrepro.detect_pipeline.evaluate."""
from medrepro import detect_pipeline
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    detect_pipeline.evaluate(snakemake.params.annotations, snakemake.input.results, snakemake.input.history,
                             snakemake.params.experiment, snakemake.output.metrics, snakemake.output.per_image,
                             snakemake.input.results_val, snakemake.input.summary, snakemake.input.split,
                             snakemake.params.bootstrap)
