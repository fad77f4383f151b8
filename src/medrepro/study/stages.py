"""Staged studies (``studies:`` in config): the four stages of transfer_multidataset.

1. every backbone x batch size, frozen backbone, head trained on cached features;
2. the stage-1 choice (best backbone and batch size on ``select_on``) x learning rates;
3. the stage-2 choice with augmentation (full forward passes through the frozen backbone);
4. the stage-2 model fine-tuned: the last ``unfreeze_fraction`` of the backbone's layers train.

Each stage writes ``runs.csv`` (one row per run: its settings and macro-averaged metrics on
the validation and test splits), ``history.csv`` and, for stages 2-4, ``predictions.csv``;
stages 1 and 2 write ``selection.json``, which the workflow reads to plan the next stage.
Stages 3 and 4 (full forward passes, the long ones on real data) keep a per-epoch checkpoint,
so an interrupted rule resumes and ends as an uninterrupted one would.  Every run is one
:mod:`classifier run <medrepro.classify.run>`, as an experiment's is; the summary of the
stages is :mod:`medrepro.study.summary`.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..classify import run
from ..classify.features import feature_table, load_features
from ..io import plain, read_csv, write_csv, write_json
from ..metrics import run_metrics
from ..specs import RunSpec, StudySpec, lr_key, replace, study_spec

# torch, the models and the training loop load in the stages that train

EVAL_SPLITS = ("val", "test")


# ----------------------------------------------------------------------------- run specs
def _row(stage: int, spec: RunSpec, pred: pd.DataFrame, hist: pd.DataFrame, names, **extra) -> dict:
    row = {"stage": stage, "backbone": spec.model.backbone, "batch_size": spec.train.batch_size,
           "lr": spec.train.lr, "augmentation": bool(spec.augment), "epochs_run": len(hist), **extra}
    for s in EVAL_SPLITS:
        part = pred[pred["split"] == s]
        if len(part):
            m = run_metrics(part, names)
            row.update({f"{s}_{k}": v for k, v in m.items() if k not in ("per_class", "confusion_matrix")})
    return row


def select(runs: pd.DataFrame, study: StudySpec, on: str | None = None) -> pd.Series:
    """The best run on ``select_on`` (or ``on``): highest accuracy/F1 or lowest loss; ties go to the
    lower loss, then to the earlier run."""
    s, metric = on or study.select_on, study.select_metric
    col = f"{s}_{metric}"
    key = runs[col] if metric == "loss" else -runs[col]
    order = pd.DataFrame({"k": key, "l": runs[f"{s}_loss"], "i": range(len(runs))}).sort_values(["k", "l", "i"])
    return runs.iloc[int(order["i"].iloc[0])]


def _selection(runs: pd.DataFrame, study: StudySpec, keys: list[str]) -> dict:
    """``selection.json``: the run ``select_on`` picks, and what the other split would have picked
    (the thesis selected on test; reporting both shows what that choice changed)."""
    best = select(runs, study)
    s, metric = study.select_on, study.select_metric
    out = {**{k: plain(best[k]) for k in keys}, "by": f"{s} {metric}", "value": float(best[f"{s}_{metric}"])}
    other = "test" if s == "val" else "val"
    if f"{other}_{metric}" in runs:
        alt = select(runs, study, on=other)
        out["if_selected_on_" + other] = {**{k: plain(alt[k]) for k in keys}, "value": float(alt[f"{other}_{metric}"])}
    return out


def run_name(spec: RunSpec) -> str:
    """A study run in words, for messages: its backbone, batch size, learning rate and augmentation."""
    aug = ", augmented" if spec.augment else ""
    return f"study run {spec.model.backbone} (batch {spec.train.batch_size}, lr {spec.train.lr:g}{aug})"


def _frozen_run(table, features: dict, spec: RunSpec) -> tuple:
    """One run of a head on cached features: (model, history, validation and test predictions)."""
    tr, va = run.split_parts(table, spec)
    train_ds, val_ds = feature_table(features, tr), feature_table(features, va)
    head = run.build(spec, feature_dim=int(train_ds.tensors[0].shape[1]))
    model, hist = run.fit(head, spec, train_ds, val_ds, progress=False)
    pred = run.predict_splits(model, table, spec, lambda p: feature_table(features, p), EVAL_SPLITS,
                              name=run_name(spec))
    return model, hist, pred


# ----------------------------------------------------------------------------- stages
def stage1(split_csv, features: dict[str, str], study: Mapping, out_dir) -> pd.DataFrame:
    """Every backbone x batch size on cached features; writes runs, history and the selection."""
    study = study_spec(study)
    table, names = read_csv(split_csv), study.class_names
    rows, hists, preds = [], [], []
    for b, path in features.items():
        feats = load_features(path)
        for bs in study.batch_sizes:
            spec = study.run(b, batch_size=bs)
            _, hist, pred = _frozen_run(table, feats, spec)
            rows.append(_row(1, spec, pred, hist, names, pretrained=bool(feats.get("pretrained"))))
            hists.append(hist.assign(run=f"{b}.bs{bs}"))
            preds.append(pred[pred["split"] == "test"].assign(run=f"{b}.bs{bs}"))
            print(f"stage 1 {b} batch {bs}: {study.select_on} accuracy "
                  f"{rows[-1][study.select_on + '_accuracy']:.3f} ({len(hist)} epochs)", file=sys.stderr)
    runs = pd.DataFrame(rows)
    out = Path(out_dir)
    write_csv(out / "runs.csv", runs)
    write_csv(out / "history.csv", pd.concat(hists, ignore_index=True))
    write_csv(out / "run_predictions.csv", pd.concat(preds, ignore_index=True))   # every run's, for intervals
    write_json(out / "selection.json", _selection(runs, study, ["backbone", "batch_size"]))
    return runs


def stage2(split_csv, features_path, selection1, study: Mapping, out_dir) -> pd.DataFrame:
    """The stage-1 choice at every learning rate; keeps the best run's head and predictions."""
    study = study_spec(study)
    table, names = read_csv(split_csv), study.class_names
    sel = json.loads(Path(selection1).read_text())
    feats = load_features(features_path)
    rows, hists, preds, models, run_preds = [], [], [], [], []
    for lr in study.learning_rates:
        spec = study.run(sel["backbone"], batch_size=sel["batch_size"], lr=lr)
        model, hist, pred = _frozen_run(table, feats, spec)
        rows.append(_row(2, spec, pred, hist, names))
        hists.append(hist.assign(run=lr_key(lr)))
        preds.append(pred)
        run_preds.append(pred[pred["split"] == "test"].assign(run=lr_key(lr)))
        models.append((model, spec))
        print(f"stage 2 lr {lr:g}: {study.select_on} accuracy {rows[-1][study.select_on + '_accuracy']:.3f}",
              file=sys.stderr)
    runs = pd.DataFrame(rows)
    best = select(runs, study)
    k = int(runs.index[runs["lr"] == best["lr"]][0])
    out = Path(out_dir)
    write_csv(out / "runs.csv", runs)
    write_csv(out / "history.csv", pd.concat(hists, ignore_index=True))
    write_csv(out / "predictions.csv", preds[k])
    write_csv(out / "run_predictions.csv", pd.concat(run_preds, ignore_index=True))
    run.save(out / "model.pt", models[k][0], models[k][1], feats["weights"], feats["seed"],
             int(feats["features"].shape[1]))
    write_json(out / "selection.json", _selection(runs, study, ["backbone", "batch_size", "lr"]))
    return runs


def stage3(split_csv, selection2, study: Mapping, out_dir, weights: str | None = None, backbone_seed: int = 0,
           features=None) -> pd.DataFrame:
    """The stage-2 choice trained with augmentation on the training split (full forward passes),
    for ``augment_epochs`` (default ``train.epochs``).  The backbone stays frozen, so the
    unaugmented validation and test images give the features that the chosen backbone's
    ``features`` file (stage 1's) already holds: with it, only the augmented training images pass
    through the backbone (on the demo a fifth fewer forward passes); without, every
    image does."""
    study = study_spec(study)
    table, names = read_csv(split_csv), study.class_names
    sel = json.loads(Path(selection2).read_text())
    spec = study.run(sel["backbone"], sel["batch_size"], sel["lr"], augment=True)
    if study.augment_epochs:
        spec = replace(spec, **{"train.epochs": study.augment_epochs})
    tr, va = run.split_parts(table, spec, split_csv)
    model = run.build(spec, weights, backbone_seed)
    cached = features
    if cached:
        feats = load_features(cached)
        made = {"backbone": feats["backbone"], "input_size": list(feats["input_size"]), "seed": feats["seed"],
                "weights": feats["weights"]}
        wanted = {"backbone": sel["backbone"], "input_size": list(spec.model.input_size),
                  "seed": backbone_seed, "weights": weights}
        if made != wanted:
            raise ValueError(f"{cached}: features of {made}, stage 3 needs {wanted}: rerun the features rule")
        unaugmented = lambda p: feature_table(feats, p)  # noqa: E731
    else:
        unaugmented = lambda p: run.image_dataset(spec, p)  # noqa: E731
    train_ds = run.image_dataset(spec, tr, augment=True)
    model, hist = run.fit(model, spec, train_ds, unaugmented(va), Path(out_dir) / "checkpoint.pt",
                          run.fingerprint(spec, weights, backbone_seed, split_csv, cached))
    pred = run.predict_splits(model, table, spec, unaugmented, EVAL_SPLITS,
                              name=run_name(spec))
    run.save(Path(out_dir) / "model.pt", model, spec, weights, backbone_seed, None)  # stage 4 may start from it
    return _write_single(out_dir, 3, spec, pred, hist, names)


def _write_single(out_dir, stage, spec, pred, hist, names, **extra) -> pd.DataFrame:
    from ..checkpoint import finish

    out = Path(out_dir)
    finish(out / "checkpoint.pt")  # only an interrupted run needs it
    runs = pd.DataFrame([_row(stage, spec, pred, hist, names, **extra)])
    write_csv(out / "runs.csv", runs)
    write_csv(out / "history.csv", hist.assign(run=f"stage{stage}"))
    write_csv(out / "predictions.csv", pred)
    return runs


def fine_tune_model(stage2_model, study: StudySpec, weights: str | None = None, backbone_seed: int = 0):
    """The stage-2 (or -3) model on its backbone with the last ``unfreeze_fraction`` of the backbone's layers
    trainable (counted as ``fine_tune.count_layers`` says: Keras' layers or torch's leaf modules);
    returns (model, spec, parameter counts)."""
    from ..classify.models import TransferNet, build_backbone

    head, ck = run.load(stage2_model)
    spec = ck["spec"]
    backbone = build_backbone(spec.model, weights, backbone_seed)
    model = TransferNet(backbone, head)
    before = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ft = study.fine_tune
    count = ft.count_layers
    unfrozen = backbone.unfreeze_last(ft.unfreeze_fraction, count)
    if count == "keras":
        from ..keras_layers import load

        layers = len(load()[backbone.name])
    else:
        layers = len(backbone.layers())
    params = {"total": sum(p.numel() for p in model.parameters()), "trainable_frozen": before,
              "trainable_fine_tuning": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "backbone_unfrozen": unfrozen, "backbone_layers": layers, "layers_counted_as": count}
    return model, spec, params


def fine_tune_start(study: StudySpec, stage2_model, stage3: tuple | None) -> tuple[str, int]:
    """The model stage 4 fine-tunes and its stage: stage 2's, or with ``fine_tune.start:
    best_of_2_3`` and ``stage3`` = (stage-2 runs.csv, stage-3 model.pt, stage-3 runs.csv) the better
    of stage 2's chosen run and stage 3's by ``select_on`` and ``select_metric`` (a tie keeps stage 2)."""
    if study.fine_tune.start == "stage2":
        return stage2_model, 2
    if stage3 is None:
        raise ValueError("fine_tune.start best_of_2_3 needs stage 2's runs and stage 3's model and runs")
    runs2, model3, runs3 = stage3
    runs2 = pd.read_csv(runs2)  # numbers (medrepro.io.read_csv keeps every column text)
    both = pd.concat([runs2.loc[[select(runs2, study).name]], pd.read_csv(runs3).iloc[[0]]], ignore_index=True)
    return (stage2_model, 2) if select(both, study)["stage"] == 2 else (model3, 3)


def stage4(split_csv, stage2_model, study: Mapping, out_dir, weights: str | None = None,
           backbone_seed: int = 0, stage3: tuple | None = None) -> pd.DataFrame:
    """Fine-tuning (no augmentation) at ``fine_tune.lr`` for ``fine_tune.epochs`` of the model
    :func:`fine_tune_start` picks: stage 2's, or the better of stages 2 and 3 (``stage3``: stage 2's
    runs.csv, stage 3's model.pt and runs.csv)."""
    study = study_spec(study)
    table, names = read_csv(split_csv), study.class_names
    start, from_stage = fine_tune_start(study, stage2_model, stage3)
    model, spec, params = fine_tune_model(start, study, weights, backbone_seed)
    spec = replace(spec, augment=())  # fine-tuning trains on the unaugmented images
    params["started_from_stage"] = from_stage
    ft = study.fine_tune
    spec = replace(spec, **{"train.lr": ft.lr, "train.epochs": ft.epochs})
    tr, va = run.split_parts(table, spec, split_csv)
    train_ds, val_ds = run.image_dataset(spec, tr), run.image_dataset(spec, va)
    print(f"fine-tuning: {params}", file=sys.stderr)
    model, hist = run.fit(model, spec, train_ds, val_ds, Path(out_dir) / "checkpoint.pt",
                          run.fingerprint(spec, weights, backbone_seed, split_csv, start))
    pred = run.predict_splits(model, table, spec, lambda p: run.image_dataset(spec, p), EVAL_SPLITS,
                              name=run_name(spec))
    write_json(Path(out_dir) / "parameters.json", params)
    return _write_single(out_dir, 4, spec, pred, hist, names, fine_tuning=True, started_from_stage=from_stage)
