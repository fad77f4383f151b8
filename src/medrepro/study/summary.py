"""A study's summary (rule ``study_summary``): every run's metrics by stage, the selections, the
best configuration, the parameter counts of every backbone's model and the intervals of the test
scores."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..classify.run import n_outputs
from ..io import plain, read_csv, write_json
from ..metrics import paper_scores, run_metrics, table_calibration
from ..specs import StudySpec, as_plain, lr_key, study_spec
from .stages import EVAL_SPLITS, select


def parameter_counts(study: StudySpec) -> dict:
    """Total and trainable (frozen backbone) parameters of every backbone's model, built on torch's
    meta device (shapes only: no memory, no weights); ``keras_total`` counts as Keras does
    (:func:`medrepro.classify.models.keras_parameter_count`), the thesis' convention."""
    import torch

    from ..classify.models import build_model, keras_parameter_count

    out = {}
    for b in study.backbones:
        spec = study.run(b)
        with torch.device("meta"):
            model = build_model(spec.model, n_outputs(spec))
        out[b] = {"total": sum(q.numel() for q in model.parameters()), "keras_total": keras_parameter_count(model, b),
                  "trainable": sum(q.numel() for q in model.parameters() if q.requires_grad)}
    return out


def summarize(study_name: str, study: dict, split_csv, stage_dirs: dict[int, str], out,
              bootstrap: dict | None = None) -> dict:
    """One metrics.json of a study: every run's metrics by stage, the selections, the best configuration.
    With ``bootstrap``, ``ci`` holds percentile intervals of the test metrics of stages 2-4 (the
    stages whose predictions are kept), of the best configuration and of every stage-1 and stage-2
    run (the paper's columns, from each run's test predictions), test images resampled by
    patient.  Calibration (Brier score, expected calibration error) is computed for the stages
    whose predictions are kept and for the best configuration."""
    spec = study_spec(study, study_name)
    names = spec.class_names
    table = read_csv(split_csv)
    out_d: dict = {"label": spec.label or study_name, "dataset": spec.dataset, "classes": names,
                   "split_counts": {s: {c: int(((table["split"] == s) & (table["class"] == c)).sum()) for c in names}
                                    for s in ("train", "val", "test")},
                   "augment": [as_plain(a) for a in spec.augment or ()]}
    for stage, d in stage_dirs.items():
        out_d[f"stage{stage}"] = _stage_entry(stage, Path(d), spec)
    out_d["parameters"] = parameter_counts(spec)
    out_d["best"] = _best(out_d, spec)
    if bootstrap and bootstrap.get("n_resamples"):
        out_d["ci"] = _stage_intervals(out_d, stage_dirs, table, names, bootstrap)
        out_d["ci"].setdefault("intervals", {}).update(_run_intervals(out_d, stage_dirs, table, names, bootstrap))
    from ..provenance import record

    out_d["provenance"] = record(study)
    write_json(out, out_d)
    return out_d


def _stage_entry(stage: int, d: Path, spec: StudySpec) -> dict:
    """A stage's part of the study's metrics: every run's metrics by split, stage 1's best run per
    backbone, the stage's selection, and the test and validation metrics of its kept predictions."""
    names = spec.class_names
    runs = pd.read_csv(d / "runs.csv")
    entry: dict = {"runs": {}}
    for _, r in runs.iterrows():
        key = f"{r['backbone']}.bs{int(r['batch_size'])}" if stage == 1 else lr_key(r["lr"]) if stage == 2 else "run"
        entry["runs"][key] = {s: {k[len(s) + 1:]: plain(v) for k, v in r.items() if k.startswith(s + "_")}
                              for s in EVAL_SPLITS}
        entry["runs"][key].update(backbone=r["backbone"], batch_size=int(r["batch_size"]), lr=float(r["lr"]))
    if "started_from_stage" in runs:  # stage 4: the model it fine-tuned (fine_tune.start)
        entry["started_from_stage"] = int(runs["started_from_stage"].iloc[0])
    if stage == 1:
        entry["best_per_backbone"] = {}
        for b, grp in runs.groupby("backbone", sort=False):
            best = select(grp.reset_index(drop=True), spec)
            entry["best_per_backbone"][b] = entry["runs"][f"{b}.bs{int(best['batch_size'])}"]
    if (d / "selection.json").is_file():
        entry["selected"] = json.loads((d / "selection.json").read_text())
    if (d / "predictions.csv").is_file():
        p = pd.read_csv(d / "predictions.csv", dtype={"image_id": str})
        test = p[p["split"] == "test"]
        entry["test"] = {**run_metrics(test, names), **table_calibration(test, names)}
        entry["val"] = run_metrics(p[p["split"] == "val"], names)
    return entry


def _best(out_d: dict, spec: StudySpec) -> dict:
    """The best configuration: stage 2's choice and the stage among 2-4 best on ``select_on``'s
    ``select_metric``; with the other split's metrics in every stage, what selecting on it would have chosen."""
    s, metric = spec.select_on, spec.select_metric
    better = (lambda a, b: a < b) if metric == "loss" else (lambda a, b: a > b)

    def best_stage(split: str) -> int:
        best_k, best_m = 2, out_d["stage2"][split]
        for k in (3, 4):
            if f"stage{k}" in out_d and better(out_d[f"stage{k}"][split][metric], best_m[metric]):
                best_k, best_m = k, out_d[f"stage{k}"][split]
        return best_k

    best_k = best_stage(s)
    sel2, test = out_d["stage2"]["selected"], out_d[f"stage{best_k}"]["test"]
    augmented = best_k == 3 or (best_k == 4 and out_d["stage4"].get("started_from_stage") == 3)
    best = {"model": sel2["backbone"], "batch_size": sel2["batch_size"], "learning_rate": sel2["lr"],
            "augmentation": augmented, "fine_tuning": best_k == 4, "stage": best_k, "accuracy": test["accuracy"],
            "chosen_by": f"{s} {metric}", "majority_rate": test["majority_rate"], "n": test["total"],
            **{k: test[k] for k in ("brier", "ece")}}
    other = "test" if s == "val" else "val"
    if all(other in out_d[f"stage{k}"] for k in (2, 3, 4) if f"stage{k}" in out_d):
        # the other split's choices: stage 1 and 2 among the runs made (later stages were only run on the
        # choice of select_on), and the final stage among 2-4
        k = best_stage(other)
        best["if_selected_on_" + other] = {
            "stage1": out_d["stage1"]["selected"].get("if_selected_on_" + other),
            "stage2": out_d["stage2"]["selected"].get("if_selected_on_" + other),
            "stage": k, "accuracy": out_d[f"stage{k}"]["test"]["accuracy"]}
    return best


def _run_intervals(out_d: dict, stage_dirs: dict, table: pd.DataFrame, names: list[str], bootstrap: dict) -> dict:
    """Intervals of every stage-1 and stage-2 run's test scores (``stage1.runs.<run>.test.<metric>``;
    stage 1's best run per backbone under ``stage1.best_per_backbone.<backbone>`` too)."""
    from ..uncertainty import bootstrap_by_patient

    out: dict = {}
    for stage in (1, 2):
        f = Path(stage_dirs.get(stage, "")) / "run_predictions.csv"
        if stage not in stage_dirs or not f.is_file():
            continue
        preds = pd.read_csv(f, dtype={"image_id": str})
        for run, rows in preds.groupby("run", sort=False):
            ci = bootstrap_by_patient(rows.drop(columns="run"), lambda r, run=run, s=stage: {
                f"stage{s}": {"runs": {run: {"test": paper_scores(r, names)}}}}, bootstrap, table)
            out.update(ci["intervals"])
    for b, run in (out_d.get("stage1", {}).get("best_per_backbone") or {}).items():
        key = f"{b}.bs{int(run['batch_size'])}"
        for path, v in list(out.items()):
            if path.startswith(f"stage1.runs.{key}.test."):
                out[path.replace(f"stage1.runs.{key}.", f"stage1.best_per_backbone.{b}.", 1)] = v
    return out


def _stage_intervals(out_d: dict, stage_dirs: dict, table: pd.DataFrame, names: list[str], bootstrap: dict) -> dict:
    """Intervals of the paper's columns (overall and per class) of the test predictions of stages
    2-4 and of the best configuration."""
    from ..uncertainty import bootstrap_by_patient

    merged: dict = {}
    for stage, d in stage_dirs.items():
        pred = Path(d) / "predictions.csv"
        if not pred.is_file():
            continue
        p = pd.read_csv(pred, dtype={"image_id": str})
        ci = bootstrap_by_patient(p[p["split"] == "test"],
                                  lambda rows, k=stage: {f"stage{k}": {"test": {
                                      **paper_scores(rows, names), **table_calibration(rows, names)}}},
                                  bootstrap, table)
        if not merged:
            merged = {k: v for k, v in ci.items() if k != "intervals"} | {"intervals": {}}
        merged["intervals"].update(ci["intervals"])
    best = out_d["best"]["stage"]
    for key in ("accuracy", "majority_rate", "brier", "ece"):
        if f"stage{best}.test.{key}" in merged.get("intervals", {}):
            merged["intervals"][f"best.{key}"] = merged["intervals"][f"stage{best}.test.{key}"]
    return merged
