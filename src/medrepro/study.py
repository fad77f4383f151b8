"""Staged studies (``studies:`` in config): the four stages of transfer_multidataset.

1. every backbone x batch size, frozen backbone, head trained on cached features;
2. the stage-1 choice (best backbone and batch size on ``select_on``) x learning rates;
3. the stage-2 choice with augmentation (full forward passes through the frozen backbone);
4. the stage-2 model fine-tuned: the last ``unfreeze_fraction`` of the backbone's layers train.

Each stage writes ``runs.csv`` (one row per run: its settings and macro-averaged metrics on
the validation and test splits), ``history.csv`` and, for stages 2-4, ``predictions.csv``;
stages 1 and 2 write ``selection.json``, which the workflow reads to plan the next stage.
Stages 3 and 4 (full forward passes, the long ones on real data) keep a per-epoch checkpoint,
so an interrupted rule resumes and ends as an uninterrupted one would.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .config import study_run_spec as run_spec
from .evaluation import classification_metrics, prediction_table
from .io import atomic_path, read_csv, write_csv, write_json
from .pipeline import _feature_table, load_features

# torch, the models and the training loop load in the stages that train (not in the summary)

EVAL_SPLITS = ("val", "test")


# ----------------------------------------------------------------------------- run specs
def lr_key(lr: float) -> str:
    """A run name for a learning rate, in full (``lr_0.0001``, ``lr_0.00012``, ``lr_1e-05``):
    distinct rates never share a name."""
    return f"lr_{float(lr)!r}"


def _train_config(t: dict, targets, n_classes: int, **over):
    from .training import TrainConfig, class_weights

    w = class_weights(targets, n_classes) if t["class_weights"] == "balanced" else None
    kw = dict(epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"], optimizer=t["optimizer"],
              weight_decay=t["weight_decay"], early_stopping=t["early_stopping"], reduce_lr=t["reduce_lr"],
              class_weights=w, sampling=t["sampling"], seed=t["seed"], device=t["device"],
              num_workers=t["num_workers"], amp=t["amp"], gpus=t["gpus"], allow_cpu=t.get("allow_cpu", False),
              deterministic=t.get("deterministic", "auto"))
    kw.update(over)
    return TrainConfig(**kw)


def _class_counts(cm, i: int) -> dict:
    """A class's test images (its confusion-matrix row), those called right and those called wrong."""
    total = int(sum(cm[i]))
    return {"correct": int(cm[i][i]), "incorrect": total - int(cm[i][i]), "total": total}


def run_metrics(pred: pd.DataFrame, names: list[str]) -> dict:
    """The paper's columns (macro averages) and the per-class report of one split's predictions."""
    m = classification_metrics(pred, names)
    correct = int((pred["target"] == pred["pred"]).sum())
    return {"accuracy": m["accuracy"], "precision": m["macro_avg"]["precision"], "recall": m["macro_avg"]["recall"],
            "f1": m["macro_avg"]["f1-score"], "loss": m["loss"], "correct": correct,
            "incorrect": int(len(pred) - correct), "total": int(len(pred)), "majority_rate": m["majority_rate"],
            "per_class": {c: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"],
                              **_class_counts(m["confusion_matrix"], i)}
                          for i, (c, v) in enumerate(m["per_class"].items())},
            "confusion_matrix": m["confusion_matrix"]}


def _predict(model, table: pd.DataFrame, names: list[str], make_ds, train: dict) -> pd.DataFrame:
    from .accel import from_train
    from .models import l2_penalty
    from .training import predict_proba

    accel = from_train(train)
    penalty = l2_penalty(model)
    frames = []
    for s in EVAL_SPLITS:
        part = table[table["split"] == s]
        if len(part):
            proba = predict_proba(model, make_ds(part), accel=accel)
            frames.append(prediction_table(part["image_id"], part["target"].astype(int), proba, names, s,
                                           l2_penalty=penalty))
    return pd.concat(frames, ignore_index=True)


def _row(stage: int, spec: dict, pred: pd.DataFrame, hist: pd.DataFrame, names, **extra) -> dict:
    row = {"stage": stage, "backbone": spec["model"]["backbone"], "batch_size": spec["train"]["batch_size"],
           "lr": spec["train"]["lr"], "augmentation": bool(spec.get("augment")), "epochs_run": len(hist), **extra}
    for s in EVAL_SPLITS:
        part = pred[pred["split"] == s]
        if len(part):
            m = run_metrics(part, names)
            row.update({f"{s}_{k}": v for k, v in m.items() if k not in ("per_class", "confusion_matrix")})
    return row


def select(runs: pd.DataFrame, study: dict) -> pd.Series:
    """The best run on ``select_on``: highest accuracy/F1 or lowest loss; ties go to the lower loss,
    then to the earlier run."""
    s, metric = study["select_on"], study["select_metric"]
    col = f"{s}_{metric}"
    key = runs[col] if metric == "loss" else -runs[col]
    order = pd.DataFrame({"k": key, "l": runs[f"{s}_loss"], "i": range(len(runs))}).sort_values(["k", "l", "i"])
    return runs.iloc[int(order["i"].iloc[0])]


def _selection(runs: pd.DataFrame, study: dict, keys: list[str]) -> dict:
    """``selection.json``: the run ``select_on`` picks, and what the other split would have picked
    (the thesis selected on test; reporting both shows what that choice changed)."""
    best = select(runs, study)
    s, metric = study["select_on"], study["select_metric"]
    out = {**{k: _py(best[k]) for k in keys}, "by": f"{s} {metric}", "value": float(best[f"{s}_{metric}"])}
    other = "test" if s == "val" else "val"
    if f"{other}_{metric}" in runs:
        alt = select(runs, {**study, "select_on": other})
        out["if_selected_on_" + other] = {**{k: _py(alt[k]) for k in keys}, "value": float(alt[f"{other}_{metric}"])}
    return out


def _split_parts(table: pd.DataFrame, t: dict):
    tr, va = table[table["split"] == "train"], table[table["split"] == t["validate_on"]]
    if tr.empty or va.empty:
        raise ValueError(f"the train or {t['validate_on']} split is empty; check the study's split config")
    return tr, va


def _frozen_run(table, features: dict, spec: dict, names) -> tuple:
    from .models import build_head
    from .training import fit

    t = spec["train"]
    tr, va = _split_parts(table, t)
    train_ds, val_ds = _feature_table(features, tr), _feature_table(features, va)
    head = build_head(spec["model"], train_ds.tensors[0].shape[1], t["seed"])
    model, hist = fit(head, train_ds, val_ds, _train_config(t, train_ds.targets, len(names)), progress=False)
    pred = _predict(model, table, names, lambda p: _feature_table(features, p), t)
    return model, hist, pred


# ----------------------------------------------------------------------------- stages
def stage1(split_csv, features: dict[str, str], study: dict, out_dir) -> pd.DataFrame:
    """Every backbone x batch size on cached features; writes runs, history and the selection."""
    table, names = read_csv(split_csv), [c["name"] for c in study["classes"]]
    rows, hists, preds = [], [], []
    for b, path in features.items():
        feats = load_features(path)
        for bs in study["batch_sizes"]:
            spec = run_spec(study, b, batch_size=bs)
            _, hist, pred = _frozen_run(table, feats, spec, names)
            rows.append(_row(1, spec, pred, hist, names, pretrained=bool(feats.get("pretrained"))))
            hists.append(hist.assign(run=f"{b}.bs{bs}"))
            preds.append(pred[pred["split"] == "test"].assign(run=f"{b}.bs{bs}"))
            print(f"stage 1 {b} batch {bs}: {study['select_on']} accuracy "
                  f"{rows[-1][study['select_on'] + '_accuracy']:.3f} ({len(hist)} epochs)", file=sys.stderr)
    runs = pd.DataFrame(rows)
    out = Path(out_dir)
    write_csv(out / "runs.csv", runs)
    write_csv(out / "history.csv", pd.concat(hists, ignore_index=True))
    write_csv(out / "run_predictions.csv", pd.concat(preds, ignore_index=True))   # every run's, for intervals
    write_json(out / "selection.json", _selection(runs, study, ["backbone", "batch_size"]))
    return runs


def _save_head(path, model, spec: dict, feature_dim: int, names) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "spec": spec, "feature_dim": feature_dim, "classes": names}, tmp)


def stage2(split_csv, features_path, selection1, study: dict, out_dir) -> pd.DataFrame:
    """The stage-1 choice at every learning rate; keeps the best run's head and predictions."""
    table, names = read_csv(split_csv), [c["name"] for c in study["classes"]]
    sel = json.loads(Path(selection1).read_text())
    feats = load_features(features_path)
    rows, hists, preds, models, run_preds = [], [], [], [], []
    for lr in study["learning_rates"]:
        spec = run_spec(study, sel["backbone"], batch_size=sel["batch_size"], lr=lr)
        model, hist, pred = _frozen_run(table, feats, spec, names)
        rows.append(_row(2, spec, pred, hist, names))
        hists.append(hist.assign(run=lr_key(lr)))
        preds.append(pred)
        run_preds.append(pred[pred["split"] == "test"].assign(run=lr_key(lr)))
        models.append((model, spec))
        print(f"stage 2 lr {lr:g}: {study['select_on']} accuracy {rows[-1][study['select_on'] + '_accuracy']:.3f}",
              file=sys.stderr)
    runs = pd.DataFrame(rows)
    best = select(runs, study)
    k = int(runs.index[runs["lr"] == best["lr"]][0])
    out = Path(out_dir)
    write_csv(out / "runs.csv", runs)
    write_csv(out / "history.csv", pd.concat(hists, ignore_index=True))
    write_csv(out / "predictions.csv", preds[k])
    write_csv(out / "run_predictions.csv", pd.concat(run_preds, ignore_index=True))
    _save_head(out / "model.pt", models[k][0], models[k][1], int(feats["features"].shape[1]), names)
    write_json(out / "selection.json", _selection(runs, study, ["backbone", "batch_size", "lr"]))
    return runs


def _image_ds(spec: dict, part: pd.DataFrame, augment: bool = False):
    from .data import ImageTable, build_augmentation

    m = spec["model"]
    aug = build_augmentation(spec.get("augment"), spec["train"]["seed"]) if augment else None
    return ImageTable(part, tuple(m["input_size"]), int(m["channels"]), aug)


def stage3(split_csv, selection2, study: dict, out_dir, weights: str | None = None, backbone_seed: int = 0
           ) -> pd.DataFrame:
    """The stage-2 choice trained with augmentation on the training split (full forward passes),
    for ``augment_epochs`` (default ``train.epochs``)."""
    from .models import TransferNet, build_backbone, build_head
    from .training import fit

    table, names = read_csv(split_csv), [c["name"] for c in study["classes"]]
    sel = json.loads(Path(selection2).read_text())
    spec = run_spec(study, sel["backbone"], sel["batch_size"], sel["lr"], augment=True)
    t = spec["train"]
    if study.get("augment_epochs"):
        t["epochs"] = int(study["augment_epochs"])
    tr, va = _split_parts(table, t)
    backbone = build_backbone(spec["model"], weights, backbone_seed)
    model = TransferNet(backbone, build_head(spec["model"], backbone.dim, t["seed"]))
    train_ds, val_ds = _image_ds(spec, tr, augment=True), _image_ds(spec, va)
    ck = Path(out_dir) / "checkpoint.pt"
    model, hist = fit(model, train_ds, val_ds, _train_config(t, train_ds.targets, len(names)), checkpoint=ck,
                      fingerprint=_fingerprint(spec, split_csv, weights))
    pred = _predict(model, table, names, lambda p: _image_ds(spec, p), t)
    return _write_single(out_dir, 3, spec, pred, hist, names)


def _fingerprint(spec: dict, *files) -> str:
    """What a stage's per-epoch checkpoint must match to be resumed: its settings and input files."""
    import hashlib

    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for f in files:
        if f:
            h.update(Path(f).read_bytes()[:1 << 20])
    return h.hexdigest()


def _write_single(out_dir, stage, spec, pred, hist, names, **extra) -> pd.DataFrame:
    out = Path(out_dir)
    (out / "checkpoint.pt").unlink(missing_ok=True)  # only an interrupted run needs it
    runs = pd.DataFrame([_row(stage, spec, pred, hist, names, **extra)])
    write_csv(out / "runs.csv", runs)
    write_csv(out / "history.csv", hist.assign(run=f"stage{stage}"))
    write_csv(out / "predictions.csv", pred)
    return runs


def fine_tune_model(stage2_model, study: dict, weights: str | None = None, backbone_seed: int = 0):
    """The stage-2 model on its backbone with the last ``unfreeze_fraction`` of the backbone's layers
    trainable (counted as ``fine_tune.count_layers`` says: Keras' layers or torch's leaf modules);
    returns (model, spec, parameter counts)."""
    import torch

    from .models import TransferNet, build_backbone, build_head

    ck = torch.load(stage2_model, map_location="cpu", weights_only=False)
    spec = ck["spec"]
    backbone = build_backbone(spec["model"], weights, backbone_seed)
    head = build_head(spec["model"], ck["feature_dim"], spec["train"]["seed"])
    head.load_state_dict(ck["state_dict"])
    model = TransferNet(backbone, head)
    before = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ft = study["fine_tune"]
    count = ft.get("count_layers", "keras")
    unfrozen = backbone.unfreeze_last(ft["unfreeze_fraction"], count)
    if count == "keras":
        from .keras_layers import load

        layers = len(load()[backbone.name])
    else:
        layers = len(backbone.layers())
    params = {"total": sum(p.numel() for p in model.parameters()), "trainable_frozen": before,
              "trainable_fine_tuning": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "backbone_unfrozen": unfrozen, "backbone_layers": layers, "layers_counted_as": count}
    return model, spec, params


def stage4(split_csv, stage2_model, study: dict, out_dir, weights: str | None = None, backbone_seed: int = 0
           ) -> pd.DataFrame:
    """Fine-tuning of the stage-2 model (no augmentation): ``fine_tune.lr`` for ``fine_tune.epochs``."""
    from .training import fit

    table, names = read_csv(split_csv), [c["name"] for c in study["classes"]]
    model, spec, params = fine_tune_model(stage2_model, study, weights, backbone_seed)
    ft = study["fine_tune"]
    spec = copy.deepcopy(spec)
    spec["train"].update(lr=ft["lr"], epochs=ft["epochs"])
    t = spec["train"]
    tr, va = _split_parts(table, t)
    train_ds, val_ds = _image_ds(spec, tr), _image_ds(spec, va)
    print(f"fine-tuning: {params}", file=sys.stderr)
    ck = Path(out_dir) / "checkpoint.pt"
    model, hist = fit(model, train_ds, val_ds, _train_config(t, train_ds.targets, len(names)), checkpoint=ck,
                      fingerprint=_fingerprint(spec, split_csv, weights, stage2_model))
    pred = _predict(model, table, names, lambda p: _image_ds(spec, p), t)
    write_json(Path(out_dir) / "parameters.json", params)
    return _write_single(out_dir, 4, spec, pred, hist, names, fine_tuning=True)


def parameter_counts(study: dict) -> dict:
    """Total and trainable (frozen backbone) parameters of every backbone's model, built on torch's
    meta device (shapes only: no memory, no weights); ``keras_total`` counts as Keras does
    (:func:`medrepro.models.keras_parameter_count`), the thesis' convention."""
    import torch

    from .models import build_model, keras_parameter_count

    n_out = 1 if study["model"]["output"] == "sigmoid" else len(study["classes"])
    out = {}
    for b in study["backbones"]:
        with torch.device("meta"):
            model = build_model(run_spec(study, b)["model"], n_out)
        out[b] = {"total": sum(q.numel() for q in model.parameters()), "keras_total": keras_parameter_count(model, b),
                  "trainable": sum(q.numel() for q in model.parameters() if q.requires_grad)}
    return out


def summarize(study_name: str, study: dict, split_csv, stage_dirs: dict[int, str], out,
              bootstrap: dict | None = None) -> dict:
    """One metrics.json of a study: every run's metrics by stage, the selections, the best configuration.
    With ``bootstrap``, ``ci`` holds percentile intervals of the test metrics of stages 2-4 (the
    stages whose predictions are kept), of the best configuration and of every stage-1 and stage-2
    run (the paper's columns, from each run's test predictions), test images resampled by
    patient."""
    names = [c["name"] for c in study["classes"]]
    table = read_csv(split_csv)
    out_d: dict = {"label": study.get("label", study_name), "dataset": study["dataset"], "classes": names,
                   "split_counts": {s: {c: int(((table["split"] == s) & (table["class"] == c)).sum()) for c in names}
                                    for s in ("train", "val", "test")},
             "augment": study.get("augment") or []}
    for stage, d in stage_dirs.items():
        runs = pd.read_csv(Path(d) / "runs.csv")
        entry: dict = {"runs": {}}
        for _, r in runs.iterrows():
            key = (f"{r['backbone']}.bs{int(r['batch_size'])}" if stage == 1 else lr_key(r["lr"]) if stage == 2
                   else "run")
            entry["runs"][key] = {s: {k[len(s) + 1:]: _py(v) for k, v in r.items() if k.startswith(s + "_")}
                                  for s in EVAL_SPLITS}
            entry["runs"][key].update(backbone=r["backbone"], batch_size=int(r["batch_size"]), lr=float(r["lr"]))
        if stage == 1:
            entry["best_per_backbone"] = {}
            for b, grp in runs.groupby("backbone", sort=False):
                best = select(grp.reset_index(drop=True), study)
                entry["best_per_backbone"][b] = entry["runs"][f"{b}.bs{int(best['batch_size'])}"]
        sel = Path(d) / "selection.json"
        if sel.is_file():
            entry["selected"] = json.loads(sel.read_text())
        pred = Path(d) / "predictions.csv"
        if pred.is_file():
            p = pd.read_csv(pred, dtype={"image_id": str})
            entry["test"] = run_metrics(p[p["split"] == "test"], names)
            entry["val"] = run_metrics(p[p["split"] == "val"], names)
        out_d[f"stage{stage}"] = entry
    out_d["parameters"] = parameter_counts(study)
    s, metric = study["select_on"], study["select_metric"]
    better = (lambda a, b: a < b) if metric == "loss" else (lambda a, b: a > b)

    def best_stage(split: str) -> int:
        best_k, best_m = 2, out_d["stage2"][split]
        for k in (3, 4):
            if f"stage{k}" in out_d and better(out_d[f"stage{k}"][split][metric], best_m[metric]):
                best_k, best_m = k, out_d[f"stage{k}"][split]
        return best_k

    best_k = best_stage(s)
    sel2 = out_d["stage2"]["selected"]
    out_d["best"] = {"model": sel2["backbone"], "batch_size": sel2["batch_size"], "learning_rate": sel2["lr"],
                     "augmentation": best_k == 3, "fine_tuning": best_k == 4, "stage": best_k,
                     "accuracy": out_d[f"stage{best_k}"]["test"]["accuracy"], "chosen_by": f"{s} {metric}",
                     "majority_rate": out_d[f"stage{best_k}"]["test"]["majority_rate"]}
    other = "test" if s == "val" else "val"
    if all(other in out_d[f"stage{k}"] for k in (2, 3, 4) if f"stage{k}" in out_d):
        # the other split's choices: stage 1 and 2 among the runs made (later stages were only run on the
        # choice of select_on), and the final stage among 2-4
        k = best_stage(other)
        out_d["best"]["if_selected_on_" + other] = {
            "stage1": out_d["stage1"]["selected"].get("if_selected_on_" + other),
            "stage2": out_d["stage2"]["selected"].get("if_selected_on_" + other),
            "stage": k, "accuracy": out_d[f"stage{k}"]["test"]["accuracy"]}
    if bootstrap and bootstrap.get("n_resamples"):
        out_d["ci"] = _stage_intervals(out_d, stage_dirs, table, names, bootstrap)
        out_d["ci"].setdefault("intervals", {}).update(_run_intervals(out_d, stage_dirs, table, names, bootstrap))
    from .provenance import record

    out_d["provenance"] = record(study)
    write_json(out, out_d)
    return out_d


def paper_scores(rows: pd.DataFrame, k: int) -> dict:
    """The thesis' columns of one run from its test rows (``target``, ``pred``): accuracy, macro
    precision, recall and F1 over all ``k`` classes (0 where a class is never predicted or never
    present, as scikit-learn's ``zero_division=0``), correct, incorrect and total: the same numbers
    as :func:`run_metrics`, from one confusion matrix, cheap enough for every bootstrap resample."""
    t, p = rows["target"].to_numpy(int), rows["pred"].to_numpy(int)
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(float)
    tp, pred_n, true_n = np.diag(cm), cm.sum(0), cm.sum(1)
    prec = np.divide(tp, pred_n, out=np.zeros(k), where=pred_n > 0)
    rec = np.divide(tp, true_n, out=np.zeros(k), where=true_n > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(k), where=(prec + rec) > 0)
    correct, n = int(tp.sum()), len(t)
    return {"accuracy": correct / n if n else 0.0, "precision": float(prec.mean()), "recall": float(rec.mean()),
            "f1": float(f1.mean()), "correct": correct, "incorrect": n - correct, "total": n}


def _run_intervals(out_d: dict, stage_dirs: dict, table: pd.DataFrame, names: list[str], bootstrap: dict) -> dict:
    """Intervals of every stage-1 and stage-2 run's test scores (``stage1.runs.<run>.test.<metric>``;
    stage 1's best run per backbone under ``stage1.best_per_backbone.<backbone>`` too)."""
    from .uncertainty import bootstrap_by_patient

    out: dict = {}
    for stage in (1, 2):
        f = Path(stage_dirs.get(stage, "")) / "run_predictions.csv"
        if stage not in stage_dirs or not f.is_file():
            continue
        preds = pd.read_csv(f, dtype={"image_id": str})
        for run, rows in preds.groupby("run", sort=False):
            ci = bootstrap_by_patient(rows.drop(columns="run"), lambda r, run=run, s=stage: {
                f"stage{s}": {"runs": {run: {"test": paper_scores(r, len(names))}}}}, bootstrap, table)
            out.update(ci["intervals"])
    for b, run in (out_d.get("stage1", {}).get("best_per_backbone") or {}).items():
        key = f"{b}.bs{int(run['batch_size'])}"
        for path, v in list(out.items()):
            if path.startswith(f"stage1.runs.{key}.test."):
                out[path.replace(f"stage1.runs.{key}.", f"stage1.best_per_backbone.{b}.", 1)] = v
    return out


def _stage_intervals(out_d: dict, stage_dirs: dict, table: pd.DataFrame, names: list[str], bootstrap: dict) -> dict:
    from .uncertainty import bootstrap_by_patient

    merged: dict = {}
    for stage, d in stage_dirs.items():
        pred = Path(d) / "predictions.csv"
        if not pred.is_file():
            continue
        p = pd.read_csv(pred, dtype={"image_id": str})
        ci = bootstrap_by_patient(p[p["split"] == "test"],
                                  lambda rows, k=stage: {f"stage{k}": {"test": run_metrics(rows, names)}},
                                  bootstrap, table)
        if not merged:
            merged = {k: v for k, v in ci.items() if k != "intervals"} | {"intervals": {}}
        merged["intervals"].update(ci["intervals"])
    best = out_d["best"]["stage"]
    for key in ("accuracy", "majority_rate"):
        if f"stage{best}.test.{key}" in merged.get("intervals", {}):
            merged["intervals"][f"best.{key}"] = merged["intervals"][f"stage{best}.test.{key}"]
    return merged


def _py(v):
    return v.item() if isinstance(v, np.generic) else v
