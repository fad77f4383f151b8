"""One function per workflow step: files in, files out.

``workflow/scripts/*.py`` call these with the paths and parameters Snakemake
gives them; tests call them directly.  Each step writes its outputs atomically.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .io import atomic_dir, atomic_path, read_csv, write_csv, write_json
from .splits import make_split

if TYPE_CHECKING:  # torch and the model code load only in the steps that train or predict
    import torch
    from torch.utils.data import TensorDataset

log = logging.getLogger("medrepro")


# ----------------------------------------------------------------------------- acquire
def synthesize(dataset: str, out_dir: str | Path, params: dict, seed: int, threads: int = 1) -> None:
    """Write the synthetic stand-in of ``dataset`` into ``out_dir`` (built aside, then moved in)."""
    from . import datasets
    with atomic_dir(out_dir) as tmp:
        made = datasets.get(dataset).synthesize(tmp, seed, threads=threads, **params)
        write_json(tmp / "SYNTHETIC.json", {"dataset": dataset, "seed": seed, "params": params,
                                            "planted_duplicates": (made or {}).get("planted_duplicates", []),
                                            "note": "synthetic stand-in written by medrepro in the real layout"})


# ----------------------------------------------------------------------------- ingest / convert
def ingest(dataset: str, raw_root: str | Path, manifest_out, rejected_out, threads: int = 1,
           checksums: str | Path | None = None) -> pd.DataFrame:
    """Read a dataset's raw files into a manifest; with ``checksums`` (a downloaded dataset's
    SHA-256 manifest) the raw files are first checked to be the ones downloaded."""
    from . import datasets
    if checksums:
        from .download import verify_checksums
        verify_checksums(raw_root, checksums)
        print(f"{raw_root}: every raw file matches {checksums}", file=sys.stderr)
    res = datasets.get(dataset).ingest(raw_root, threads=threads)
    manifest = res.manifest
    if manifest.empty:
        raise ValueError(f"{raw_root}: no image of {dataset} could be read; see {rejected_out}")
    write_csv(manifest_out, manifest)
    write_csv(rejected_out, res.rejections)
    print(f"{dataset}: {len(manifest)} images, {len(res.rejections)} rejected "
          f"(labels: {manifest['label'].value_counts().to_dict()})", file=sys.stderr)
    return manifest


def convert(manifest_in, images_dir, manifest_out, rejected_out, channels: int = 1, max_side: int | None = 1024,
            threads: int = 1) -> pd.DataFrame:
    from .convert import convert_manifest
    manifest = read_csv(manifest_in)
    conv, rejected = convert_manifest(manifest, images_dir, channels, max_side, threads)
    write_csv(manifest_out, conv)
    write_csv(rejected_out, rejected)
    print(f"converted {len(conv)} images, {len(rejected)} rejected", file=sys.stderr)
    return conv


def contact_sheet(converted_manifest, dataset: str, out_stem, per_class: int = 6, style: dict | None = None,
                  scale: str = "demo", seed: int = 0) -> None:
    from .config import scale_note
    from .figures import apply_style, contact_sheet_figure, save_figure
    apply_style(style)
    df = read_csv(converted_manifest)
    fig = contact_sheet_figure(df, f"{dataset}: {len(df)} images", per_class=per_class, seed=seed)
    save_figure(fig, out_stem, style, note=scale_note(scale))


# ----------------------------------------------------------------------------- split
def class_table(df: pd.DataFrame, classes: list[dict]) -> pd.DataFrame:
    """Keep rows whose dataset label belongs to a configured class; add ``class`` and ``target``."""
    mapping = {}
    for k, c in enumerate(classes):
        for lab in c["labels"]:
            if lab in mapping:
                raise ValueError(f"dataset label {lab!r} is mapped to two classes")
            mapping[lab] = (k, c["name"])
    known = df["label"].isin(mapping)
    out = df.loc[known].copy()
    out["target"] = out["label"].map(lambda v: mapping[v][0])
    out["class"] = out["label"].map(lambda v: mapping[v][1])
    return out


def draw_subset(table: pd.DataFrame, per_class: dict[str, int], seed: int) -> pd.DataFrame:
    """A seeded random subset with ``per_class[name]`` images of each class (all of a class if fewer)."""
    parts = []
    for name, n in per_class.items():
        pool = table[table["class"] == name]
        if len(pool) < n:
            print(f"subset: class {name!r} has {len(pool)} images, fewer than the {n} asked; all are used",
                  file=sys.stderr)
        parts.append(pool.sample(n=min(n, len(pool)), random_state=seed))
    return pd.concat(parts).sort_index()


def split(converted_manifest, experiment: dict, split_out, audit_out) -> pd.DataFrame:
    df = read_csv(converted_manifest)
    table = known = class_table(df, experiment["classes"])
    missing = [lab for c in experiment["classes"] for lab in c["labels"] if lab not in set(df["label"])]
    s = experiment["split"]
    if s.get("sources"):
        table = table[table["source_split"].isin(s["sources"])]
    merged = {}
    if s.get("merge"):  # e.g. {val: train}: those images count as the other source split
        merged = {f"{a}->{b}": int((table["source_split"] == a).sum()) for a, b in s["merge"].items()}
        table = table.assign(source_split=table["source_split"].replace(s["merge"]))
    subset = experiment.get("subset")
    if subset:
        table = draw_subset(table, subset["per_class"], subset.get("seed", 0))
    s = experiment["split"]
    out, audit = make_split(table, fractions=s["fractions"], seed=s["seed"], keep_source=s["keep_source"],
                            group_by=s["group_by"], stratify_by="class", overlap_policy=s["overlap"],
                            counts=s.get("counts") or None)
    audit["left_out_by_class_filter"] = int(len(df) - len(known))
    audit["subset"] = subset
    audit["merged_source_splits"] = merged
    for split_name, per in (audit.get("counts_asked") or {}).items():
        for cls, n in per.items():
            got = audit["counts_drawn"][split_name][cls]
            if got < n:  # too few images (or patients that do not fit): said, and the run goes on
                print(f"split.counts: {split_name} has {got} {cls!r} images of the {n} asked "
                      "(not enough whole patients left)", file=sys.stderr)
    audit["configured_labels_absent"] = missing
    cols = ["image_id", "png", "label", "class", "target", "patient_id", "source_split", "split", "boxes", "mask_png",
            "width", "height"]
    write_csv(split_out, out[cols])
    write_json(audit_out, audit)
    return out


# ----------------------------------------------------------------------------- classify
def _datasets_for(split_table: pd.DataFrame, experiment: dict, augment: bool):
    from .data import ImageTable, build_augmentation
    m = experiment["model"]
    size, ch = tuple(m["input_size"]), int(m["channels"])
    tr = split_table[split_table["split"] == "train"]
    va = split_table[split_table["split"] == experiment["train"]["validate_on"]]
    aug = build_augmentation(experiment.get("augment"), experiment["train"]["seed"]) if augment else None
    return ImageTable(tr, size, ch, aug), ImageTable(va, size, ch)


def n_outputs(experiment: dict) -> int:
    return 1 if experiment["model"]["output"] == "sigmoid" else len(experiment["classes"])


def extract_features(converted_manifest, model_spec: dict, weights: str | None, seed: int, out, batch_size: int = 64,
                     train: dict | None = None) -> None:
    """Pooled backbone features of every image of a dataset, for all experiments that share
    the backbone, its weights and the input size."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from .accel import from_train, log_line
    from .data import ImageTable
    from .models import build_backbone

    df = read_csv(converted_manifest).assign(target=0)
    backbone = build_backbone(model_spec, weights, seed)
    ds = ImageTable(df, tuple(model_spec["input_size"]), int(model_spec.get("channels", 3)))
    accel = from_train({**(train or {}), "amp": False})  # features are cached in full precision
    print(log_line(accel), file=sys.stderr, flush=True)
    backbone = accel.model(backbone).eval()
    feats = []
    with torch.no_grad():
        for x, _ in tqdm(DataLoader(ds, batch_size=batch_size, pin_memory=accel.pin_memory), desc="features",
                         file=sys.stderr, mininterval=5):
            feats.append(backbone(accel.batch(x)).float().cpu())
    with atomic_path(out) as tmp:
        torch.save({"image_id": df["image_id"].tolist(), "features": torch.cat(feats),
                    "backbone": model_spec["backbone"], "input_size": list(model_spec["input_size"]),
                    "weights": weights, "pretrained": weights is not None, "seed": seed}, tmp)


def _feature_table(features_path, part: pd.DataFrame) -> TensorDataset:
    """The cached features of ``part``'s images and their targets; ``features_path`` is a
    features file or one already loaded by :func:`load_features`."""
    import torch
    from torch.utils.data import TensorDataset

    ck = features_path if isinstance(features_path, dict) else load_features(features_path)
    index = ck["index"]
    missing = [i for i in part["image_id"] if i not in index]
    if missing:
        raise ValueError(f"{ck['path']}: no features for {len(missing)} image(s), e.g. {missing[:3]}; "
                         "rerun the features rule")
    rows = torch.tensor([index[i] for i in part["image_id"]], dtype=torch.long)
    ds = TensorDataset(ck["features"][rows], torch.tensor(part["target"].astype(int).to_numpy()))
    ds.targets = part["target"].astype(int).to_numpy()
    return ds


def load_features(path) -> dict:
    """A features file, with an image-id index."""
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=False)
    ck["index"] = {k: i for i, k in enumerate(ck["image_id"])}
    ck["path"] = str(path)
    return ck


def train(split_csv, experiment: dict, model_out, history_out, checkpoint=None, summary_out=None,
          features=None, weights: str | None = None, backbone_seed: int = 0) -> None:
    """Train an experiment's model; with ``features`` (a features file) only its head, on the cache."""
    import torch

    from .accel import describe, summary_rows
    from .models import build_backbone, build_head, build_model, summary
    from .training import TrainConfig, class_weights, fit

    table = read_csv(split_csv)
    t = experiment["train"]
    for s in ("train", t["validate_on"]):
        if not (table["split"] == s).any():
            raise ValueError(f"{split_csv}: the {s} split is empty; check the experiment's split config")
    m = experiment["model"]
    torch.manual_seed(t["seed"])
    if features:
        tr, va = (table[table["split"] == s] for s in ("train", t["validate_on"]))
        train_ds, val_ds = _feature_table(features, tr), _feature_table(features, va)
        model = build_head(m, train_ds.tensors[0].shape[1], t["seed"])
        input_shape: tuple = (train_ds.tensors[0].shape[1],)
    else:
        model = build_model(m, n_outputs(experiment), weights, backbone_seed)
        if m.get("arch") == "transfer":  # same head as on the cache, whatever the backbone consumed
            model.head = build_head(m, model.backbone.dim, t["seed"])
        train_ds, val_ds = _datasets_for(table, experiment, augment=True)
        input_shape = (int(m["channels"]), *m["input_size"])
    balanced = t["class_weights"] == "balanced"
    weights_c = class_weights(train_ds.targets, len(experiment["classes"])) if balanced else None
    cfg = TrainConfig(epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"], optimizer=t["optimizer"],
                      weight_decay=t["weight_decay"], early_stopping=t["early_stopping"], reduce_lr=t["reduce_lr"],
                      class_weights=weights_c, sampling=t["sampling"], seed=t["seed"], device=t["device"],
                      num_workers=t["num_workers"], amp=t["amp"], gpus=t["gpus"], allow_cpu=t.get("allow_cpu", False),
              deterministic=t.get("deterministic", "auto"))
    print(f"training on {len(train_ds)} images, validating on {len(val_ds)}; class weights {weights_c}; "
          f"{'head on cached features ' + str(features) if features else 'full forward passes'}", file=sys.stderr)
    fingerprint = hashlib.sha256(json.dumps([experiment, weights, backbone_seed], sort_keys=True).encode()
                                 + Path(split_csv).read_bytes()
                                 + (Path(features).read_bytes()[:1 << 20] if features else b"")).hexdigest()
    accel = cfg.accel()
    model, history = fit(model, train_ds, val_ds, cfg, checkpoint=checkpoint, fingerprint=fingerprint, accel=accel)
    from . import distributed

    if not distributed.is_main():  # the other ranks of a data-parallel run write nothing
        return
    state = model.cpu().state_dict()
    if m.get("arch") == "transfer" and not features and m.get("freeze", True):
        state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    with atomic_path(model_out) as tmp:
        torch.save({"state_dict": state, "model": m, "classes": [c["name"] for c in experiment["classes"]],
                    "head_only": m.get("arch") == "transfer" and m.get("freeze", True),
                    "weights": weights, "backbone_seed": backbone_seed, "runtime": describe(accel),
                    "feature_dim": train_ds.tensors[0].shape[1] if features else getattr(model, "backbone", None)
                    and model.backbone.dim}, tmp)
    write_csv(history_out, history)
    if summary_out:
        rows = summary(model, input_shape)
        if features:  # the frozen backbone belongs to the model: report it too
            bb = build_backbone(m, weights, backbone_seed)
            n = sum(p.numel() for p in bb.parameters())
            rows.insert(0, {"layer": f"backbone ({m['backbone']}, frozen, "
                                     f"{'pretrained' if weights else 'random init'})",
                            "output_shape": str((bb.dim,)), "params": n, "trainable": 0})
        write_csv(summary_out, pd.DataFrame(rows + summary_rows(accel)))
    if checkpoint:  # only an interrupted run needs it
        Path(checkpoint).unlink(missing_ok=True)


def load_model(path) -> tuple[torch.nn.Module, list[str], dict]:
    """The trained model (the head alone for a frozen-backbone transfer model), its classes and the file's info."""
    import torch

    from .models import BACKBONES, build_head, build_model

    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck.get("head_only"):
        model = build_head(ck["model"], ck.get("feature_dim") or BACKBONES[ck["model"]["backbone"]][1])
    else:
        model = build_model(ck["model"])
    model.load_state_dict(ck["state_dict"])
    return model, ck["classes"], ck


def predict(split_csv, model_path, experiment: dict, predictions_out, features=None) -> pd.DataFrame:
    from .accel import from_train, log_line
    from .data import ImageTable
    from .evaluation import prediction_table
    from .models import TransferNet, build_backbone, l2_penalty
    from .training import predict_proba

    table = read_csv(split_csv)
    model, classes, ck = load_model(model_path)
    m = experiment["model"]
    if ck.get("head_only") and not features:  # a frozen backbone: rebuild it and put the head on it
        model = TransferNet(build_backbone(m, ck.get("weights"), ck.get("backbone_seed", 0)), model)
    accel = from_train(experiment["train"])
    print(log_line(accel), file=sys.stderr, flush=True)
    frames = []
    penalty = l2_penalty(model)
    for s in ("train", "val", "test"):
        part = table[table["split"] == s]
        if part.empty:
            continue
        ds = _feature_table(features, part) if features else ImageTable(part, tuple(m["input_size"]),
                                                                        int(m["channels"]))
        proba = predict_proba(model, ds, accel=accel)
        frames.append(prediction_table(part["image_id"], part["target"].astype(int), proba, classes, s,
                                       experiment["threshold"], penalty))
    pred = pd.concat(frames, ignore_index=True)
    write_csv(predictions_out, pred)
    return pred


def test_intervals(test: pd.DataFrame, names: list[str], split_csv, bootstrap: dict) -> tuple[dict, dict]:
    """Bootstrap intervals of the test metrics (paths ``test.*``) and DeLong's for a binary AUC."""
    from .evaluation import classification_metrics
    from .uncertainty import bootstrap_by_patient, delong_ci

    ci = bootstrap_by_patient(test, lambda rows: {"test": classification_metrics(rows, names)}, bootstrap,
                              split_csv or None)
    delong = {}
    if len(names) == 2:
        d = delong_ci(test["target"].astype(int), test[f"prob_{names[1]}"], bootstrap.get("confidence", 0.95))
        if d["auc"] is not None:
            delong["test.auc"] = {k: float(v) for k, v in d.items()}
    return ci, delong


def evaluate(predictions_csv, history_csv, experiment: dict, metrics_out, summary_csv=None, split_csv=None,
             bootstrap: dict | None = None) -> dict:
    """Metrics per split, the training curve's landmarks and the provenance (the training step's
    runtime read from ``summary_csv``, the model summary).  With ``bootstrap`` (the config's
    ``n_resamples``, ``confidence``, ``seed``), ``ci`` holds a percentile interval of every test
    metric, the test images resampled by patient (ids from ``split_csv``), and ``ci_delong`` the
    AUC's DeLong interval (binary tasks)."""
    from .evaluation import classification_metrics
    from .provenance import record, runtime_from_summary

    pred = pd.read_csv(predictions_csv, dtype={"image_id": str})
    names = [c["name"] for c in experiment["classes"]]
    out: dict = {}
    for s in ("train", "val", "test"):
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
                    "min_val_loss_epoch": int(hist.loc[best_loss, "epoch"])}
    out["provenance"] = record(experiment, runtime_from_summary(summary_csv))
    write_json(metrics_out, out)
    return out
