"""Workflow steps of classification experiments (``experiments:``, rules of ``classify.smk``):
files in, files out.  Each trains, predicts with or evaluates one :mod:`classifier run
<medrepro.classify.run>`."""
from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..io import read_csv, write_csv, write_json
from ..specs import replace, run_spec
from . import run
from .features import feature_table, load_features


def train(split_csv, experiment: Mapping, model_out, history_out, *, checkpoint=None, summary_out=None,
          features=None, weights: str | None = None, backbone_seed: int = 0) -> None:
    """Train an experiment's model; with ``features`` (a features file) only its head, on the cache."""
    import torch

    from ..accel import describe, from_train, summary_rows
    from ..checkpoint import finish
    from .models import build_backbone, summary

    spec = run_spec(experiment)
    table = read_csv(split_csv)
    tr, va = run.split_parts(table, spec, split_csv)
    m = spec.model
    torch.manual_seed(spec.train.seed)
    if features:
        feats = load_features(features)
        train_ds, val_ds = feature_table(feats, tr), feature_table(feats, va)
        feature_dim = int(train_ds.tensors[0].shape[1])
        model = run.build(spec, feature_dim=feature_dim)
        input_shape: tuple = (feature_dim,)
    else:
        model, feature_dim = run.build(spec, weights, backbone_seed), None
        train_ds, val_ds = run.image_dataset(spec, tr, augment=True), run.image_dataset(spec, va)
        input_shape = (m.channels, *m.input_size)
    _, weights_by_class = run.train_settings(spec, train_ds.targets)
    print(f"training on {len(train_ds)} images, validating on {len(val_ds)}; class weights {weights_by_class}; "
          f"{'head on cached features ' + str(features) if features else 'full forward passes'}", file=sys.stderr)
    accel = from_train(spec.train)
    model, history = run.fit(model, spec, train_ds, val_ds, checkpoint,
                             run.fingerprint(spec, weights, backbone_seed, split_csv, features), accel=accel)
    from .. import distributed

    if not distributed.is_main():  # the other ranks of a data-parallel run write nothing
        return
    run.save(model_out, model, spec, weights, backbone_seed, feature_dim, describe(accel))
    write_csv(history_out, history)
    if summary_out:
        rows = summary(model, input_shape)
        if features:  # the frozen backbone belongs to the model: report it too
            bb = build_backbone(m, weights, backbone_seed)
            n = sum(p.numel() for p in bb.parameters())
            rows.insert(0, {"layer": f"backbone ({m.backbone}, frozen, "
                                     f"{'pretrained' if weights else 'random init'})",
                            "output_shape": str((bb.dim,)), "params": n, "trainable": 0})
        write_csv(summary_out, pd.DataFrame(rows + summary_rows(accel)))
    finish(checkpoint)  # only an interrupted run needs it


def predict(split_csv, model_path, experiment: Mapping, predictions_out, features=None) -> pd.DataFrame:
    """Predictions of every split's images: from cached ``features`` (a frozen transfer model's head)
    or from the images (the head put back on its backbone)."""
    from ..accel import from_train, log_line

    spec = run_spec(experiment)
    table = read_csv(split_csv)
    model, ck = run.load(model_path, on_backbone=not features)
    accel = from_train(spec.train)
    print(log_line(accel), file=sys.stderr, flush=True)
    if features:
        feats = load_features(features)
        make_ds = lambda part: feature_table(feats, part)  # noqa: E731
    else:
        make_ds = lambda part: run.image_dataset(ck["spec"], part)  # noqa: E731
    pred = run.predict_splits(model, table, replace(ck["spec"], threshold=spec.threshold), make_ds,
                              accel=accel, name=f"experiment {Path(model_path).parent.name}")
    write_csv(predictions_out, pred)
    return pred


def test_intervals(test: pd.DataFrame, names: list[str], split_csv, bootstrap: dict) -> tuple[dict, dict]:
    """Bootstrap intervals of the test metrics (paths ``test.*``) and DeLong's for a binary AUC."""
    from ..metrics import classification_metrics
    from ..uncertainty import bootstrap_by_patient, delong_ci

    ci = bootstrap_by_patient(test, lambda rows: {"test": classification_metrics(rows, names)}, bootstrap,
                              split_csv or None)
    delong = {}
    if len(names) == 2:
        d = delong_ci(test["target"].astype(int), test[f"prob_{names[1]}"], bootstrap["confidence"])
        if d["auc"] is not None:
            delong["test.auc"] = {k: float(v) for k, v in d.items()}
    return ci, delong


def evaluate(predictions_csv, history_csv, experiment: Mapping, metrics_out, *, summary_csv=None, split_csv=None,
             bootstrap: dict | None = None) -> dict:
    """Metrics per split (``train``: the final model on the training images, as Keras'
    ``model.evaluate``, beside ``train.last``, the last epoch's running log), the training curve's
    landmarks (epochs as Keras' log counts them, from 1, and as TensorBoard's axis does, from 0) and
    the provenance (the training step's
    runtime read from ``summary_csv``, the model summary).  With ``bootstrap`` (the config's
    ``n_resamples``, ``confidence``, ``seed``), ``ci`` holds a percentile interval of every test
    metric, the test images resampled by patient (ids from ``split_csv``), and ``ci_delong`` the
    AUC's DeLong interval (binary tasks)."""
    from ..metrics import classification_metrics
    from ..provenance import record, runtime_from_summary

    pred = pd.read_csv(predictions_csv, dtype={"image_id": str})
    names = run.class_names(run_spec(experiment))
    out: dict = {}
    for s in run.SPLITS:
        part = pred[pred["split"] == s]
        if len(part):
            out[s] = classification_metrics(part, names)
    test = pred[pred["split"] == "test"]
    if bootstrap and bootstrap.get("n_resamples") and len(test):
        out["ci"], out["ci_delong"] = test_intervals(test, names, split_csv, bootstrap)
    hist = pd.read_csv(history_csv)
    best_acc, best_loss = hist["val_accuracy"].idxmax(), hist["val_loss"].idxmin()
    out["train"] = {**out.get("train", {}), "last": hist.iloc[-1].to_dict(), "best": hist.loc[best_loss].to_dict(),
                    "epochs_run": int(len(hist)),
                    "max_val_accuracy": float(hist.loc[best_acc, "val_accuracy"]),
                    "max_val_accuracy_epoch": int(hist.loc[best_acc, "epoch"]),
                    "min_val_loss": float(hist.loc[best_loss, "val_loss"]),
                    "min_val_loss_epoch": int(hist.loc[best_loss, "epoch"]),
                    # TensorBoard's horizontal axis counts epochs from 0 (Keras' log from 1)
                    "max_val_accuracy_tensorboard_step": int(hist.loc[best_acc, "epoch"]) - 1,
                    "min_val_loss_tensorboard_step": int(hist.loc[best_loss, "epoch"]) - 1}
    out["provenance"] = record(experiment, runtime_from_summary(summary_csv))
    write_json(metrics_out, out)
    return out
