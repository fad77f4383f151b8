"""Names shared by the rules. What each step reads, which config keys rerun it and the output names
are decided in medrepro.plan (tested there); this file only binds them to Snakemake's wildcards.
"""

import yaml

RESULTS = config["results"]
ENV = "../../envs/medrepro.yaml"
DETECTRON2_ENV = "../../envs/detectron2.yaml"
FIGURE_FORMATS = config["figures"]["formats"]
PLAN = Plan(config, RESULTS)
STUDIES = config["studies"]
LEAKAGE = config["leakage"]
DETECT, CLASSIFY = PLAN.detect, PLAN.classify
FEATURE_SPECS = PLAN.feature_specs
DOWNLOADED_WEIGHTS = PLAN.downloaded_weights
INFLATION = PLAN.inflation
CHECKLISTS = PLAN.checklists()
datasets_with = PLAN.datasets_with
split_params = medrepro.plan.split_params
leakage_datasets = PLAN.leakage_datasets
repeat_runs, repeat_headlines = PLAN.repeat_runs, PLAN.repeat_headlines
inflation_files, probe_papers = PLAN.inflation_files, PLAN.probe_papers
dataset_gpus, features_device = PLAN.dataset_gpus, PLAN.features_device


wildcard_constraints:
    dataset=one_of(config["datasets"]),
    experiment=one_of(config["experiments"]),
    study=one_of(STUDIES),
    paper=one_of(config["papers"]),
    key="[A-Za-z0-9_]+",


def step_params(name, step):
    """Experiment ``name``'s config as step ``step`` depends on (medrepro.plan.step_params)."""
    return medrepro.plan.step_params(config["experiments"][name], step)


def study_stage_params(name, stage):
    return medrepro.plan.study_stage_params(STUDIES[name], stage)


def chain_priority(wildcards):
    return PLAN.chain_priority(dict(wildcards.items()))


def copied_stand_ins(wildcards):
    return PLAN.copied_stand_ins(wildcards.dataset)


def ingest_inputs(wildcards):
    return PLAN.ingest_inputs(wildcards.dataset)


def experiment_dataset(wildcards):
    return PLAN.manifest(config["experiments"][wildcards.experiment]["dataset"])


def experiment_inputs(extra):
    return lambda wildcards: PLAN.experiment_inputs(wildcards.experiment, extra)


def backbone_weights(wildcards):
    return PLAN.backbone_weights(wildcards.experiment)


def features_inputs(wildcards):
    return PLAN.features_inputs(wildcards.dataset, wildcards.key)


def detector_inputs(wildcards):
    return PLAN.detector_inputs(wildcards.experiment)


def detector_env(wildcards):
    detectron2 = PLAN.detector_backend(wildcards.experiment) == "detectron2"
    return DETECTRON2_ENV if detectron2 else ENV


def study_feature_files(wildcards):
    return PLAN.study_feature_files(wildcards.study)


def stage1_choice(study):
    """The backbone stage 1 selected (read once the checkpoint has run; re-planned when it reruns)."""
    sel = checkpoints.study_stage1.get(study=study).output.selection
    with open(sel) as fh:
        return json.load(fh)["backbone"]


def study_stage_inputs(extra, **kw):
    """Stages 2 to 4 (medrepro.plan.Plan.study_stage_inputs), once stage 1 has chosen."""

    def inputs(wildcards):
        chosen = stage1_choice(wildcards.study)
        return PLAN.study_stage_inputs(wildcards.study, chosen, extra, **kw)

    return inputs


def paper_inputs(wildcards):
    return PLAN.paper_inputs(wildcards.paper)


def paper_captions(paper):
    """Each output's caption (medrepro.publish.html.captions), for publish_paper and --report."""
    cfg = config["papers"][paper]
    with open(cfg["published"]) as f:
        return output_captions(paper_spec(cfg), yaml.safe_load(f))


def contact_sheets():
    return PLAN.contact_sheets(FIGURE_FORMATS)


def all_targets():
    return PLAN.all_targets(FIGURE_FORMATS)


def split_files():
    return PLAN.split_folders()
