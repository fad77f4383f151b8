"""Adapter: rule evaluate_detector -> medrepro.detect.steps.evaluate."""
from medrepro.detect import steps as detect_steps
from medrepro.io import logging_to

with logging_to(snakemake.log[0]):
    detect_steps.evaluate(snakemake.params.annotations, snakemake.input.results, snakemake.input.history,
                          snakemake.params.experiment, snakemake.output.metrics, snakemake.output.per_image,
                          results_val=snakemake.input.results_val, summary_csv=snakemake.input.summary,
                          split_csv=snakemake.input.split, bootstrap=snakemake.params.bootstrap)
