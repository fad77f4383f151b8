"""Paths and input functions shared by the rules (no logic beyond naming files)."""

import copy

import yaml

RESULTS = config["results"]
ENV = "../../envs/medrepro.yaml"
FIGURE_FORMATS = config["figures"]["formats"]


def datasets_with(source):
    return [
        n
        for n, d in config["datasets"].items()
        if d.get("source", "synthetic") == source
    ]


def one_of(names):
    """A wildcard pattern matching exactly ``names`` (and nothing when empty)."""
    return "|".join(names) if names else "(?!x)x"


def copied_stand_ins(wildcards):
    """The raw folders of the stand-ins a synthetic dataset copies pictures from (`synthetic.copies`)."""
    copies = (
        config["datasets"][wildcards.dataset].get("synthetic", {}).get("copies") or {}
    )
    return {d: f"{RESULTS}/raw/{d}" for d, n in copies.items() if n}


def raw_root(wildcards):
    d = config["datasets"][wildcards.dataset]
    return d["path"] if d["source"] == "local" else f"{RESULTS}/raw/{wildcards.dataset}"


def ingest_inputs(wildcards):
    """The raw folder and, for a downloaded dataset, the SHA-256 manifest it is checked against."""
    d = {"raw": raw_root(wildcards)}
    if config["datasets"][wildcards.dataset]["source"] == "download":
        d["checksums"] = f"{RESULTS}/raw/{wildcards.dataset}.sha256"
    return d


# Keys that only later steps read, by the first step that reads them. Snakemake reruns a job whose
# params change, so a step gets the experiment without the keys of the steps after it: changing
# the detection score threshold re-evaluates, it does not retrain a day-long Mask R-CNN.
LATER_KEYS = {
    "predict": (
        "threshold",
    ),  # the classification threshold makes the predicted labels
    "evaluate": (
        "detect.score_threshold",
        "detect.iou_threshold",
        "detect.false_positive",
    ),
}
STEPS = ("train", "predict", "evaluate")


def canonical(obj):
    """``obj`` with every mapping's keys sorted (lists keep their order): Snakemake reruns a job when
    its params differ from the last run's, and a config overlay can reorder keys without changing
    a value."""
    return json.loads(json.dumps(obj, sort_keys=True))


def step_params(name, step):
    """Experiment ``name``'s config as step ``step`` (train, predict, evaluate) depends on: without
    the keys :data:`LATER_KEYS` assigns to later steps, nor the paper it is reported in.
    """
    exp = copy.deepcopy(config["experiments"][name])
    exp.pop("paper", None)
    for later in STEPS[STEPS.index(step) + 1 :]:
        for key in LATER_KEYS.get(later, ()):
            *parents, leaf = key.split(".")
            d = exp
            for p in parents:
                d = d.get(p) or {}
            d.pop(leaf, None)
    return canonical(exp)


# what each stage of a study reads from the study's config (the data, model and training settings
# every run shares, plus the stage's own grid); the other keys (display names, later stages'
# settings) do not rerun it: changing stage 4's fine-tuning epochs does not retrain stages 1-3
STUDY_SHARED = ("dataset", "classes", "model", "backbones", "train")
STUDY_STAGE_KEYS = {
    1: STUDY_SHARED + ("batch_sizes", "select_on", "select_metric"),
    2: STUDY_SHARED + ("learning_rates", "select_on", "select_metric"),
    3: STUDY_SHARED + ("augment", "augment_epochs"),
    4: STUDY_SHARED + ("fine_tune", "select_on", "select_metric"),
}


def study_stage_params(name, stage):
    """Study ``name``'s config as stage ``stage`` depends on (:data:`STUDY_STAGE_KEYS`)."""
    study = STUDIES[name]
    return canonical({k: study[k] for k in STUDY_STAGE_KEYS[stage] if k in study})


def split_params(exp):
    """What a split depends on (so that changing, say, the epochs does not redo the split)."""
    return canonical({k: exp.get(k) for k in ("classes", "subset", "split")})


def experiment_dataset(wildcards):
    exp = config["experiments"][wildcards.experiment]
    return f"{RESULTS}/converted/{exp['dataset']}/manifest.csv"


def features_file(experiment):
    exp = config["experiments"][experiment]
    return (
        f"{RESULTS}/features/{exp['dataset']}/{feature_key(exp, config['weights'])}.pt"
    )


# (dataset, key) -> the model config whose backbone makes those features
FEATURE_SPECS = {
    (e["dataset"], feature_key(e, config["weights"])): e["model"]
    for e in config["experiments"].values()
    if uses_feature_cache(e)
}
STUDIES = config["studies"]
for _name, _study in STUDIES.items():
    for _key, _model in study_features(_study, config["weights"]).values():
        FEATURE_SPECS[(_study["dataset"], _key)] = _model


def dataset_gpus(dataset):
    """GPUs of the features rule: one when any experiment or study of the dataset trains on a GPU
    (a forward pass over the dataset needs no data parallelism)."""
    runs = list(config["experiments"].values()) + list(STUDIES.values())
    return min(
        1, max([r["train"]["gpus"] for r in runs if r["dataset"] == dataset], default=0)
    )


def features_device(dataset):
    """The device keys of a train block for the features rule (which serves every run of the
    dataset): the GPU of ``dataset_gpus``, full precision, channels-last unless every run of the
    dataset turns it off."""
    runs = list(config["experiments"].values()) + list(STUDIES.values())
    return {
        "device": "auto",
        "gpus": dataset_gpus(dataset),
        "amp": False,
        "allow_cpu": config["allow_cpu"],
        "channels_last": any(
            r["train"]["channels_last"] for r in runs if r["dataset"] == dataset
        ),
    }


def study_dir(study):
    return f"{RESULTS}/studies/{study}"


def study_feature_files(wildcards):
    s = STUDIES[wildcards.study]
    return {
        b: f"{RESULTS}/features/{s['dataset']}/{key}.pt"
        for b, (key, _) in study_features(s, config["weights"]).items()
    }


def stage1_choice(study):
    """The backbone stage 1 selected (read once the checkpoint has run; re-planned when it reruns)."""
    sel = checkpoints.study_stage1.get(study=study).output.selection
    with open(sel) as fh:
        return json.load(fh)["backbone"]


def chosen_features(study):
    """The features file of the backbone stage 1 chose."""
    s = STUDIES[study]
    key, _ = study_features(s, config["weights"])[stage1_choice(study)]
    return f"{RESULTS}/features/{s['dataset']}/{key}.pt"


def study_stage2_inputs(wildcards):
    return {
        "split": f"{study_dir(wildcards.study)}/split.csv",
        "selection": f"{study_dir(wildcards.study)}/stage1/selection.json",
        "features": chosen_features(wildcards.study),
    }


def study_stage_inputs(extra, features=False, fine_tune=False):
    """Stages 3 and 4: the split, ``extra`` stage-2 files, the chosen backbone's weights, if any,
    with ``features`` its features file (stage 3 reads its unaugmented images' features there), and
    with ``fine_tune`` the stage-2 and -3 results stage 4 picks its start from (fine_tune.start).
    """

    def inputs(wildcards):
        d = {"split": f"{study_dir(wildcards.study)}/split.csv"}
        d.update({k: f"{study_dir(wildcards.study)}/{v}" for k, v in extra.items()})
        if (
            fine_tune
            and STUDIES[wildcards.study]["fine_tune"]["start"] == "best_of_2_3"
        ):
            d.update(
                {
                    k: f"{study_dir(wildcards.study)}/{v}"
                    for k, v in (
                        ("runs2", "stage2/runs.csv"),
                        ("model3", "stage3/model.pt"),
                        ("runs3", "stage3/runs.csv"),
                    )
                }
            )
        if features:
            d["features"] = chosen_features(wildcards.study)
        w = weights_file(stage1_choice(wildcards.study))
        if w:
            d["weights"] = w
        return d

    return inputs


def experiment_inputs(extra):
    """Input function: the split (plus ``extra`` files of the experiment) and, for a frozen
    backbone without augmentation, its cached features."""

    def inputs(wildcards):
        d = {"split": f"{RESULTS}/experiments/{wildcards.experiment}/split.csv"}
        d.update(
            {
                k: v.format(results=RESULTS, experiment=wildcards.experiment)
                for k, v in extra.items()
            }
        )
        exp = config["experiments"][wildcards.experiment]
        if uses_feature_cache(exp):
            d["features"] = features_file(wildcards.experiment)
        elif exp["model"].get("arch") == "transfer" and weights_file(
            exp["model"]["backbone"]
        ):
            d["weights"] = weights_file(exp["model"]["backbone"])
        return d

    return inputs


# the weights the workflow downloads: every `weights:` entry set to 'imagenet' (torchvision's, .pth)
# or 'keras' (the Keras application's, .h5)
WEIGHTS_FORMAT = {"imagenet": "pth", "keras": "h5"}
DOWNLOADED_WEIGHTS = [b for b, w in config["weights"].items() if w in WEIGHTS_FORMAT]


def weights_file(backbone):
    """The weights file of a backbone: a local path, the download target for 'imagenet' or
    'keras', or None."""
    w = config["weights"].get(backbone)
    if w in WEIGHTS_FORMAT:
        return f"{RESULTS}/weights/{backbone}.{WEIGHTS_FORMAT[w]}"
    return w


def backbone_weights(wildcards):
    m = config["experiments"][wildcards.experiment]["model"]
    return weights_file(m.get("backbone")) if m.get("arch") == "transfer" else None


def features_inputs(wildcards):
    d = {"manifest": f"{RESULTS}/converted/{wildcards.dataset}/manifest.csv"}
    w = weights_file(FEATURE_SPECS[(wildcards.dataset, wildcards.key)]["backbone"])
    if w:
        d["weights"] = w
    return d


DETECT = [n for n, e in config["experiments"].items() if e["task"] == "detect"]
CLASSIFY = [n for n, e in config["experiments"].items() if e["task"] == "classify"]
DETECT_DATASETS = {config["experiments"][n]["dataset"] for n in DETECT}


STUDY_DATASETS = {s["dataset"] for s in STUDIES.values()}


def chain_priority(wildcards):
    """The scheduler's order for the two long chains of the demo, on 2 cores: 10 for the jobs
    leading to a Mask R-CNN training (its dataset's acquisition, manifest and conversion, its split
    and annotations; the trainings themselves are 10 too), 5 for the staged studies and their
    data and features (four stages in a row), 0 for the rest: the short independent jobs then fill
    the cores at the end instead of a study's last stages running alone.
    """
    w = dict(wildcards.items())
    if w.get("experiment") in DETECT or w.get("dataset") in DETECT_DATASETS:
        return 10
    if w.get("study") in STUDIES or w.get("dataset") in STUDY_DATASETS:
        return 5
    return 0


STAGE_FILES = [
    "stage1/runs.csv",
    "stage1/history.csv",
    "stage2/runs.csv",
    "stage2/history.csv",
    "stage2/predictions.csv",
    "stage3/runs.csv",
    "stage3/history.csv",
    "stage3/predictions.csv",
    "stage4/runs.csv",
    "stage4/history.csv",
    "stage4/predictions.csv",
    "stage4/parameters.json",
]
EXPERIMENT_FILES = {
    "study": ("metrics.json", "split.csv", *STAGE_FILES),
    "classify": (
        "metrics.json",
        "history.csv",
        "model_summary.csv",
        "split.csv",
        "predictions.csv",
    ),
    "detect": (
        "metrics.json",
        "history.csv",
        "model_summary.csv",
        "split.csv",
        "predictions.json",
        "per_image.csv",
        "annotations/test.json",
    ),
}


def detector_inputs(wildcards):
    """The experiment's COCO annotations and, when configured, its pretrained weights."""
    d = {
        k: f"{RESULTS}/experiments/{wildcards.experiment}/annotations/{k}.json"
        for k in ("train", "val", "test")
    }
    pre = config["experiments"][wildcards.experiment]["model"]["detector"]["pretrained"]
    if pre and weights_file(pre):
        d["weights"] = weights_file(pre)
    return d


def detector_env(wildcards):
    backend = config["experiments"][wildcards.experiment]["model"]["detector"][
        "backend"
    ]
    return "../../envs/detectron2.yaml" if backend == "detectron2" else ENV


def file_key(kind):
    """'stage1/runs.csv' -> 'stage1_runs': the name publish_paper knows a file by."""
    return "_".join(Path(kind).with_suffix("").parts)


def paper_inputs(wildcards):
    out = {}
    for e in config["papers"][wildcards.paper]["experiments"]:
        if e in STUDIES:
            for kind in EXPERIMENT_FILES["study"]:
                out[f"{e}__{file_key(kind)}"] = f"{study_dir(e)}/{kind}"
            continue
        for kind in EXPERIMENT_FILES[config["experiments"][e]["task"]]:
            out[f"{e}__{file_key(kind)}"] = f"{RESULTS}/experiments/{e}/{kind}"
    return out


def contact_sheets():
    return expand(
        f"{RESULTS}/figures/contact_sheets/{{dataset}}.{{fmt}}",
        dataset=list(config["datasets"]),
        fmt=FIGURE_FORMATS,
    )


def all_targets():
    return (
        expand(f"{RESULTS}/manifests/{{dataset}}.csv", dataset=list(config["datasets"]))
        + contact_sheets()
        + expand(f"{RESULTS}/papers/{{paper}}", paper=list(config["papers"]))
        + [f"{RESULTS}/report.md", f"{RESULTS}/html"]
    )


wildcard_constraints:
    dataset=one_of(list(config["datasets"])),
    experiment=one_of(list(config["experiments"])),
    study=one_of(list(STUDIES)),
    paper=one_of(list(config["papers"])),
    key="[A-Za-z0-9_]+",


def split_files():
    """Every experiment's and study's split and split audit, by name (not the inflation pairs'
    arms: their exposure is reported beside their inflation)."""
    out = {}
    for e, x in config["experiments"].items():
        if not x.get("inflation_of"):
            out[e] = f"{RESULTS}/experiments/{e}"
    for s in STUDIES:
        out[s] = f"{RESULTS}/studies/{s}"
    return out


def leakage_datasets():
    used = {config["experiments"][e]["dataset"] for e in config["experiments"]}
    used |= {STUDIES[s]["dataset"] for s in STUDIES}
    return sorted(
        used
        | {d for pair in LEAKAGE["across"] for d in pair if d in config["datasets"]}
    )


LEAKAGE = config["leakage"]


def paper_captions(paper):
    """Each output's caption (medrepro.publish.html.captions), for publish_paper and --report."""
    cfg = config["papers"][paper]
    with open(cfg["published"]) as f:
        return output_captions(cfg, yaml.safe_load(f))


def repeat_runs():
    """Experiment -> the metrics.json of it and of each seed repeat (config `repeats`)."""
    return {
        e: [
            f"{RESULTS}/experiments/{x}/metrics.json"
            for x in [e] + repeats_of(config["experiments"], e)
        ]
        for e in config["repeats"]["experiments"]
    }


def repeat_headlines():
    """The papers' headline rows for the repeated experiments."""
    return [
        h
        for p in config["papers"].values()
        for h in p.get("headline", [])
        if h["experiment"] in config["repeats"]["experiments"]
    ]


# pair -> what rule inflation reads (medrepro.plan)
INFLATION = inflation_inputs(config, RESULTS)


def inflation_files():
    """Every file of every pair's arms, for rule inflation's input."""
    return [
        f
        for pair in INFLATION.values()
        for arm in pair["arms"].values()
        for f in arm.values()
    ]


def probe_papers():
    """Paper -> the source-probe folders of the datasets it uses (medrepro.plan.probed_datasets)."""
    return {
        p: [f"{RESULTS}/probe/{d}" for d in ds]
        for p, ds in probed_datasets(config).items()
    }


# paper -> what it reported of each reporting-checklist item (papers.<paper>.checklist)
CHECKLISTS = {
    p: c["checklist"] for p, c in config["papers"].items() if c.get("checklist")
}
