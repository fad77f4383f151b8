"""medrepro: reproduce five medical-imaging deep-learning papers end to end.

    snakemake --cores all                    # the embedded demo (config/config.yaml, config/papers/*/)
    snakemake --cores all --use-conda        # each rule in its conda env (envs/)
    snakemake --profile profiles/slurm --use-conda --configfile config/full.yaml   # a SLURM cluster

The stages are in workflow/rules/, one file each; the logic is in src/medrepro/.
"""

import json
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# the Snakefile reads the package from src/; rule scripts find it through the link
# workflow/scripts/medrepro -> src/medrepro (Snakemake puts the script folder on sys.path),
# so rules also work in conda envs and on cluster nodes without installing the package
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

import medrepro.plan
from medrepro.config import ConfigError, paper_files, validate_config
from medrepro.departures import resolved_departures
from medrepro.plan import Plan, canonical, one_of, probe_datasets
from medrepro.publish.html import captions as output_captions
from medrepro.specs import paper_spec


configfile: "config/config.yaml"


# each paper is a folder, config/papers/<paper>/: its runs.yaml (and, with paper_settings full,
# its full.yaml; with run_sizes smoke or tiny, its smoke.yaml or tiny.yaml) laid over config.yaml;
# Snakemake lays the --configfile files over each in turn
try:
    _paper_files = paper_files(Path(workflow.basedir) / "config", config)
except ConfigError as exc:
    sys.exit(str(exc))
for _paper_file in _paper_files:

    configfile: str(_paper_file)


report: "workflow/report/workflow.rst"


try:
    _validated = validate_config(
        config, Path(workflow.basedir) / "config" / "schema.yaml"
    )
except ConfigError as exc:
    sys.exit(str(exc))
config.clear()
config.update(_validated)


include: "workflow/rules/common.smk"
include: "workflow/rules/acquire.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/study.smk"
include: "workflow/rules/leakage.smk"
include: "workflow/rules/publish.smk"


rule all:
    default_target: True
    input:
        all_targets(),
