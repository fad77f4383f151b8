"""What a run of the workflow reads, named from the validated config: the runs, datasets and
weights behind each paper (``snakemake <paper>`` plans exactly these; tests/test_plan.py checks
it against Snakemake's own plan), the files each rule reads (:class:`Plan`), and which config keys
rerun which step (:func:`step_params`, :func:`study_stage_params`, :func:`split_params`)."""
from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .backbones import resolve_normalize, weights_kind
from .specs import model_spec, study_spec


@dataclass(frozen=True)
class Needs:
    """The runs (experiments and studies, by name), datasets and ``weights:`` entries of some papers."""

    papers: tuple[str, ...]
    runs: dict = field(default_factory=dict)
    datasets: frozenset = frozenset()
    weights: frozenset = frozenset()


def run_weights(run: Mapping) -> set[str]:
    """The ``weights:`` entries a run reads: a transfer model's backbone, a detector's pretrained
    weights, every stage-1 candidate of a study."""
    if "backbones" in run:  # a study: stage 1 extracts features with each candidate
        return set(run["backbones"])
    model = run.get("model", {})
    if model.get("arch") == "transfer":
        return {model["backbone"]}
    pre = model.get("detector", {}).get("pretrained")
    return {pre} if pre else set()


def needs(cfg: Mapping, papers: Iterable[str] | None = None) -> Needs:
    """What ``papers`` (default: all of them, with every dataset, as the default target does) read."""
    every = papers is None
    papers = tuple(cfg["papers"]) if every else tuple(papers)
    unknown = [p for p in papers if p not in cfg["papers"]]
    if unknown:
        raise KeyError(f"not a paper of this config: {', '.join(unknown)} (papers: {', '.join(cfg['papers'])})")
    everything = {**cfg.get("experiments", {}), **cfg.get("studies", {})}
    runs = {name: everything[name] for p in papers for name in cfg["papers"][p]["experiments"]}
    datasets = set(cfg["datasets"]) if every else {r["dataset"] for r in runs.values()}
    weights = set().union(*(run_weights(r) for r in runs.values())) if runs else set()
    return Needs(papers, runs, frozenset(datasets), frozenset(weights & set(cfg.get("weights", {}))))


def inflation_inputs(cfg: Mapping, results: str) -> dict[str, dict]:
    """Each leakage-inflation pair of a validated config (``inflation``; its runs are experiments
    with ``inflation_of``) with what rule ``inflation`` reads of it: its paper, dataset, model in
    words, class names, and per arm the files under ``results`` (predictions, split, split audit)."""
    from .config import inflation_pairs

    out = {}
    for name, arms in inflation_pairs(cfg["experiments"]).items():
        e = cfg["experiments"][arms["image"]]
        out[name] = {
            "paper": e["paper"], "dataset": e["dataset"],
            "model": f"{e['model'].get('backbone') or e['model']['arch']}, batch {e['train']['batch_size']}",
            "classes": [c["name"] for c in e["classes"]],
            "arms": {arm: {k: f"{results}/experiments/{run}/{f}" for k, f in
                           (("predictions", "predictions.csv"), ("split", "split.csv"), ("audit", "split_audit.json"))}
                     for arm, run in arms.items()},
        }
    return out


def probe_datasets(cfg: Mapping) -> list[str]:
    """The datasets of ``source_probe`` that the config has (rule source_probe runs for each)."""
    return [d for d in cfg["source_probe"]["datasets"] if d in cfg["datasets"]]


def probed_datasets(cfg: Mapping) -> dict[str, list[str]]:
    """Paper -> the datasets of ``source_probe`` that its experiments or studies use (the report
    prints each probe in those papers' sections)."""
    probed = probe_datasets(cfg)
    runs = list(cfg.get("experiments", {}).values()) + list(cfg.get("studies", {}).values())
    return {p: [d for d in probed if any(r["paper"] == p and r["dataset"] == d for r in runs)] for p in cfg["papers"]}


# ---------------------------------------------------------------------------------------------
# What each step reads and which config keys rerun it. Snakemake reruns a job whose params differ
# from its last run's, so each step is given only the keys it depends on; the rules name files,
# this module decides what they are.

STEPS = ("train", "predict", "evaluate")
# keys that only later steps read, by the first step that reads them: changing the detection score
# threshold re-evaluates, it does not retrain a day-long Mask R-CNN
LATER_KEYS = {
    "predict": ("threshold",),  # the classification threshold makes the predicted labels
    "evaluate": ("detect.score_threshold", "detect.iou_threshold", "detect.false_positive"),
}
# what each stage of a study reads of the study's config (the data, model and training settings
# every run shares, plus the stage's own grid); the other keys (display names, later stages'
# settings) do not rerun it: changing stage 4's fine-tuning epochs does not retrain stages 1-3
STUDY_SHARED = ("dataset", "classes", "model", "backbones", "train")
STUDY_STAGE_KEYS = {
    1: STUDY_SHARED + ("batch_sizes", "select_on", "select_metric"),
    2: STUDY_SHARED + ("learning_rates", "select_on", "select_metric"),
    3: STUDY_SHARED + ("augment", "augment_epochs"),
    4: STUDY_SHARED + ("fine_tune", "select_on", "select_metric"),
}
SPLIT_KEYS = ("classes", "subset", "split")

# the files each kind of run leaves in its folder (what publish_paper reads)
STAGE_FILES = (
    "stage1/runs.csv", "stage1/history.csv",
    *(f"stage{s}/{f}" for s in (2, 3, 4) for f in ("runs.csv", "history.csv", "predictions.csv")),
    "stage4/parameters.json",
)
RUN_FILES = {
    "study": ("metrics.json", "split.csv", *STAGE_FILES),
    "classify": ("metrics.json", "history.csv", "model_summary.csv", "split.csv", "predictions.csv"),
    "detect": ("metrics.json", "history.csv", "model_summary.csv", "split.csv", "predictions.json",
               "per_image.csv", "annotations/test.json"),
}
# the weights the workflow downloads: ``weights:`` entries 'imagenet' (torchvision's, .pth) and
# 'keras' (the Keras application's, .h5)
WEIGHTS_FORMAT = {"imagenet": "pth", "keras": "h5"}


def canonical(obj):
    """``obj`` with every mapping's keys sorted (lists keep their order): Snakemake reruns a job when
    its params differ from the last run's, and a config overlay can reorder keys without changing a
    value."""
    return json.loads(json.dumps(obj, sort_keys=True))


def step_params(experiment: Mapping, step: str) -> dict:
    """An experiment's config as step ``step`` (train, predict, evaluate) depends on: without the
    keys :data:`LATER_KEYS` assigns to later steps, nor the paper it is reported in."""
    exp = copy.deepcopy(dict(experiment))
    exp.pop("paper", None)
    for later in STEPS[STEPS.index(step) + 1:]:
        for key in LATER_KEYS.get(later, ()):
            *parents, leaf = key.split(".")
            d = exp
            for p in parents:
                d = d.get(p) or {}
            d.pop(leaf, None)
    return canonical(exp)


def study_stage_params(study: Mapping, stage: int) -> dict:
    """A study's config as stage ``stage`` depends on (:data:`STUDY_STAGE_KEYS`)."""
    return canonical({k: study[k] for k in STUDY_STAGE_KEYS[stage] if k in study})


def split_params(run: Mapping) -> dict:
    """What a split depends on (changing, say, the epochs does not redo the split)."""
    return canonical({k: run.get(k) for k in SPLIT_KEYS})


def file_key(kind: str) -> str:
    """'stage1/runs.csv' -> 'stage1_runs': the name publish_paper knows a file by."""
    return "_".join(PurePosixPath(kind).with_suffix("").parts)


def one_of(names: Iterable[str]) -> str:
    """A wildcard pattern matching exactly ``names`` (and nothing when empty)."""
    names = list(names)
    return "|".join(names) if names else "(?!x)x"


class Plan:
    """The files each rule of the workflow reads and writes, named from a validated config and the
    results folder: workflow/rules/*.smk call these (through one-line input functions) and name
    nothing else."""

    def __init__(self, cfg: Mapping, results: str):
        self.cfg, self.results = cfg, results
        self.experiments, self.studies = cfg["experiments"], cfg["studies"]
        self.detect = [n for n, e in self.experiments.items() if e["task"] == "detect"]
        self.classify = [n for n, e in self.experiments.items() if e["task"] == "classify"]
        self.detect_datasets = {self.experiments[n]["dataset"] for n in self.detect}
        self.study_datasets = {s["dataset"] for s in self.studies.values()}
        self.downloaded_weights = [b for b, w in cfg["weights"].items() if w in WEIGHTS_FORMAT]
        # (dataset, key) -> the model config whose backbone makes those features
        self.feature_specs = {(e["dataset"], feature_key(e, cfg["weights"])): e["model"]
                              for e in self.experiments.values() if uses_feature_cache(e)}
        self.study_feature_keys = {name: study_features(s, cfg["weights"]) for name, s in self.studies.items()}
        for name, s in self.studies.items():
            for key, model in self.study_feature_keys[name].values():
                self.feature_specs[(s["dataset"], key)] = model
        self.experiment_features = {n: f"{results}/features/{e['dataset']}/{feature_key(e, cfg['weights'])}.pt"
                                    for n, e in self.experiments.items() if uses_feature_cache(e)}
        self.inflation = inflation_inputs(cfg, results)

    # -- data ------------------------------------------------------------------------------------
    def datasets_with(self, source: str) -> list[str]:
        return [n for n, d in self.cfg["datasets"].items() if d.get("source", "synthetic") == source]

    def copied_stand_ins(self, dataset: str) -> dict[str, str]:
        """The raw folders of the stand-ins a synthetic dataset copies pictures from (``synthetic.copies``)."""
        copies = self.cfg["datasets"][dataset].get("synthetic", {}).get("copies") or {}
        return {d: f"{self.results}/raw/{d}" for d, n in copies.items() if n}

    def ingest_inputs(self, dataset: str) -> dict[str, str]:
        """The raw folder and, for a downloaded dataset, the SHA-256 manifest it is checked against."""
        d = self.cfg["datasets"][dataset]
        out = {"raw": d["path"] if d["source"] == "local" else f"{self.results}/raw/{dataset}"}
        if d["source"] == "download":
            out["checksums"] = f"{self.results}/raw/{dataset}.sha256"
        return out

    def manifest(self, dataset: str) -> str:
        return f"{self.results}/converted/{dataset}/manifest.csv"

    def run(self, name: str) -> Mapping:
        """An experiment's or a study's config."""
        return self.experiments[name] if name in self.experiments else self.studies[name]

    def run_dir(self, name: str) -> str:
        return f"{self.results}/{'experiments' if name in self.experiments else 'studies'}/{name}"

    # -- weights and features --------------------------------------------------------------------
    def weights_file(self, backbone: str | None) -> str | None:
        """The weights file of a backbone: a local path, the download target for 'imagenet' or
        'keras', or None."""
        w = self.cfg["weights"].get(backbone)
        if w in WEIGHTS_FORMAT:
            return f"{self.results}/weights/{backbone}.{WEIGHTS_FORMAT[w]}"
        return w

    def backbone_weights(self, experiment: str) -> str | None:
        m = self.experiments[experiment]["model"]
        return self.weights_file(m.get("backbone")) if m.get("arch") == "transfer" else None

    def features_inputs(self, dataset: str, key: str) -> dict[str, str]:
        out = {"manifest": self.manifest(dataset)}
        w = self.weights_file(self.feature_specs[(dataset, key)]["backbone"])
        if w:
            out["weights"] = w
        return out

    def _runs_of(self, dataset: str) -> list[Mapping]:
        return [r for r in [*self.experiments.values(), *self.studies.values()] if r["dataset"] == dataset]

    def dataset_gpus(self, dataset: str) -> int:
        """GPUs of the features rule: one when any experiment or study of the dataset trains on a
        GPU (a forward pass over the dataset needs no data parallelism)."""
        return min(1, max([r["train"]["gpus"] for r in self._runs_of(dataset)], default=0))

    def features_device(self, dataset: str) -> dict:
        """The device keys of a train block for the features rule (which serves every run of the
        dataset): the GPU of :meth:`dataset_gpus`, full precision, channels-last unless every run of
        the dataset turns it off."""
        return {"device": "auto", "gpus": self.dataset_gpus(dataset), "amp": False,
                "allow_cpu": self.cfg["allow_cpu"],
                "channels_last": any(r["train"]["channels_last"] for r in self._runs_of(dataset))}

    # -- experiments -------------------------------------------------------------------------------
    def experiment_inputs(self, experiment: str, extra: Mapping[str, str]) -> dict[str, str]:
        """The split (plus ``extra`` files of the experiment, formatted with ``results`` and
        ``experiment``) and, for a frozen backbone without augmentation, its cached features, else a
        transfer model's weights."""
        out = {"split": f"{self.results}/experiments/{experiment}/split.csv"}
        out.update({k: v.format(results=self.results, experiment=experiment) for k, v in extra.items()})
        exp = self.experiments[experiment]
        if experiment in self.experiment_features:
            out["features"] = self.experiment_features[experiment]
        elif exp["model"].get("arch") == "transfer" and self.backbone_weights(experiment):
            out["weights"] = self.backbone_weights(experiment)
        return out

    def detector_inputs(self, experiment: str) -> dict[str, str]:
        """The experiment's COCO annotations and, when configured, its pretrained weights."""
        out = {k: f"{self.results}/experiments/{experiment}/annotations/{k}.json" for k in ("train", "val", "test")}
        pre = self.experiments[experiment]["model"]["detector"]["pretrained"]
        if pre and self.weights_file(pre):
            out["weights"] = self.weights_file(pre)
        return out

    def detector_backend(self, experiment: str) -> str:
        return self.experiments[experiment]["model"]["detector"]["backend"]

    # -- studies -----------------------------------------------------------------------------------
    def study_feature_files(self, study: str) -> dict[str, str]:
        """Backbone -> the features file of each stage-1 candidate."""
        ds = self.studies[study]["dataset"]
        return {b: f"{self.results}/features/{ds}/{key}.pt" for b, (key, _) in self.study_feature_keys[study].items()}

    def study_stage_inputs(self, study: str, chosen: str, extra: Mapping[str, str] = (), features: bool = False,
                           fine_tune: bool = False, weights: bool = True) -> dict[str, str]:
        """Stages 2 to 4, once stage 1 chose backbone ``chosen``: the split and ``extra`` files of
        the study's folder; with ``features`` the chosen backbone's features file; with
        ``fine_tune`` the stage-2 and -3 results stage 4 picks its start from (fine_tune.start);
        with ``weights`` the chosen backbone's weights, if any (stage 2 trains on features only)."""
        folder = self.run_dir(study)
        out = {"split": f"{folder}/split.csv", **{k: f"{folder}/{v}" for k, v in dict(extra).items()}}
        if fine_tune and self.studies[study]["fine_tune"]["start"] == "best_of_2_3":
            out.update({k: f"{folder}/{v}" for k, v in
                        (("runs2", "stage2/runs.csv"), ("model3", "stage3/model.pt"), ("runs3", "stage3/runs.csv"))})
        if features:
            out["features"] = self.study_feature_files(study)[chosen]
        if weights and self.weights_file(chosen):
            out["weights"] = self.weights_file(chosen)
        return out

    # -- scheduling --------------------------------------------------------------------------------
    def chain_priority(self, wildcards: Mapping[str, str]) -> int:
        """The scheduler's order for the two long chains of the demo, on 2 cores: 10 for the jobs
        leading to a Mask R-CNN training (its dataset's acquisition, manifest and conversion, its
        split and annotations; the trainings themselves are 10 too), 5 for the staged studies and
        their data and features (four stages in a row), 0 for the rest: the short independent jobs
        then fill the cores at the end instead of a study's last stages running alone."""
        w = dict(wildcards)
        if w.get("experiment") in self.detect or w.get("dataset") in self.detect_datasets:
            return 10
        if w.get("study") in self.studies or w.get("dataset") in self.study_datasets:
            return 5
        return 0

    # -- leakage, publishing, report ---------------------------------------------------------------
    def split_folders(self) -> dict[str, str]:
        """Every experiment's and study's folder holding its split and split audit, by name in name
        order (not the order a config overlay may give the runs: the leakage job must not rerun
        because an overlay touched a run) and not the inflation pairs' arms (their exposure is
        reported beside their inflation)."""
        names = [e for e, x in self.experiments.items() if not x.get("inflation_of")] + list(self.studies)
        return {name: self.run_dir(name) for name in sorted(names)}

    def leakage_datasets(self) -> list[str]:
        """The datasets of every run, and those of the ``leakage.across`` pairs the config has."""
        used = {r["dataset"] for r in [*self.experiments.values(), *self.studies.values()]}
        across = {d for pair in self.cfg["leakage"]["across"] for d in pair if d in self.cfg["datasets"]}
        return sorted(used | across)

    def paper_inputs(self, paper: str) -> dict[str, str]:
        """``<run>__<file key>`` -> every file publish_paper reads of the paper's runs."""
        out = {}
        for name in self.cfg["papers"][paper]["experiments"]:
            kind = "study" if name in self.studies else self.experiments[name]["task"]
            for f in RUN_FILES[kind]:
                out[f"{name}__{file_key(f)}"] = f"{self.run_dir(name)}/{f}"
        return out

    def repeat_runs(self) -> dict[str, list[str]]:
        """Experiment -> the metrics.json of it and of each seed repeat (config ``repeats``)."""
        from .config import repeats_of

        return {e: [f"{self.results}/experiments/{x}/metrics.json" for x in [e, *repeats_of(self.experiments, e)]]
                for e in self.cfg["repeats"]["experiments"]}

    def repeat_headlines(self) -> list[dict]:
        """The papers' headline rows for the repeated experiments."""
        return [h for p in self.cfg["papers"].values() for h in p.get("headline", [])
                if h["experiment"] in self.cfg["repeats"]["experiments"]]

    def inflation_files(self) -> list[str]:
        """Every file of every inflation pair's arms, for rule inflation's input."""
        return [f for pair in self.inflation.values() for arm in pair["arms"].values() for f in arm.values()]

    def probe_papers(self) -> dict[str, list[str]]:
        """Paper -> the source-probe folders of the datasets it uses (:func:`probed_datasets`)."""
        return {p: [f"{self.results}/probe/{d}" for d in ds] for p, ds in probed_datasets(self.cfg).items()}

    def checklists(self) -> dict[str, str]:
        """Paper -> what it reported of each reporting-checklist item (``papers.<paper>.checklist``)."""
        return {p: c["checklist"] for p, c in self.cfg["papers"].items() if c.get("checklist")}

    def contact_sheets(self, formats: Iterable[str]) -> list[str]:
        return [f"{self.results}/figures/contact_sheets/{d}.{fmt}" for d in self.cfg["datasets"] for fmt in formats]

    def all_targets(self, formats: Iterable[str]) -> list[str]:
        """The default target: every dataset's manifest and contact sheet, every paper, the report."""
        return ([f"{self.results}/manifests/{d}.csv" for d in self.cfg["datasets"]]
                + self.contact_sheets(formats)
                + [f"{self.results}/papers/{p}" for p in self.cfg["papers"]]
                + [f"{self.results}/report.md", f"{self.results}/html"])


# ---------------------------------------------------------------------------------------------
# The feature cache's file names (rule features): what a frozen backbone's features depend on

def uses_feature_cache(experiment: dict) -> bool:
    """A frozen backbone seeing unaugmented images gives the same features every epoch:
    compute them once per backbone, dataset and input size (rule ``features``) and train
    the head on them."""
    return (model_spec(experiment["model"]).frozen_transfer and not experiment["augment"]
            and experiment["train"]["feature_cache"] == "auto")


def feature_key(experiment: dict, weights: dict | None = None) -> str:
    """The name of an experiment's features file: what the features depend on (``weights``: the
    config's ``weights`` block; Keras' weights mean Keras' network, marked ``_keras``)."""
    m = experiment["model"]
    h, w = m["input_size"]
    pool = "_flat" if m["pool"] == "flatten" else ""
    kind = weights_kind((weights or {}).get(m["backbone"]))
    norm = resolve_normalize(m["backbone"], m["normalize"], kind)
    impl = "_keras" if kind == "keras" else ""
    return f"{m['backbone']}{impl}_{h}x{w}_c{m['channels']}_{norm}{pool}"


def study_run_spec(study: dict, backbone: str, batch_size: int | None = None, lr: float | None = None,
                   augment: bool = False) -> dict:
    """The experiment-shaped description (plain data) of one run of a study: what
    :meth:`medrepro.specs.StudySpec.run` makes of it."""
    return study_spec(study).run(backbone, batch_size, lr, augment).as_dict()


def study_features(study: dict, weights: dict | None = None) -> dict[str, tuple[str, dict]]:
    """backbone -> (features file key, model spec) of a study's stage-1 candidates."""
    return {b: (feature_key(study_run_spec(study, b), weights), study_run_spec(study, b)["model"])
            for b in study["backbones"]}
