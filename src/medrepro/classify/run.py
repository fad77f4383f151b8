"""One classifier run, whoever asks for it: an experiment (``experiments:``) or a run of a study
stage (``studies:``, built by :meth:`medrepro.specs.StudySpec.run`).

A run is described by its :class:`~medrepro.specs.RunSpec` (``classes``, ``model``, ``train``,
``augment``, ``threshold``: the typed, frozen form of an experiment block) plus the backbone's
weights file and seed.  This module is the only place that
builds its model, its training settings (the ``train`` block and class weights), its resume fingerprint,
its datasets, its predictions and its model file; experiments (:mod:`medrepro.classify.steps`)
and study stages (:mod:`medrepro.study.stages`) only choose what to run.
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Callable

import pandas as pd

from ..io import atomic_path
from ..metrics import prediction_table
from ..specs import RunSpec, TrainSpec, replace, run_spec

if TYPE_CHECKING:  # torch loads only in the steps that train or predict
    from torch import nn

SPLITS = ("train", "val", "test")


def class_names(spec: RunSpec) -> list[str]:
    return spec.class_names


def n_outputs(spec: RunSpec) -> int:
    """Output units: one for a sigmoid output, one per class for softmax."""
    return 1 if spec.model.output == "sigmoid" else len(spec.classes)


def split_parts(table: pd.DataFrame, spec: RunSpec, source="the split table") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training images and the images validated on (``train.validate_on``); an empty one is an error."""
    on = spec.train.validate_on
    tr, va = table[table["split"] == "train"], table[table["split"] == on]
    for name, part in (("train", tr), (on, va)):
        if part.empty:
            raise ValueError(f"{source}: the {name} split is empty; check the split config")
    return tr, va


def image_dataset(spec: RunSpec, part: pd.DataFrame, augment: bool = False):
    """``part``'s images at the model's input size and channels; with ``augment`` the spec's
    augmentation, seeded by the run's training seed."""
    from ..data import ImageTable, build_augmentation

    m = spec.model
    aug = build_augmentation(spec.augment, spec.train.seed) if augment and spec.augment else None
    return ImageTable(part, m.input_size, m.channels, aug)


def build(spec: RunSpec, weights: str | None = None, backbone_seed: int = 0, feature_dim: int | None = None
          ) -> nn.Module:
    """The run's model: with ``feature_dim``, the head alone (trained on cached features); otherwise
    the whole model, a transfer model with the same seeded head as on the cache."""
    from .models import build_head, build_model

    m, seed = spec.model, spec.train.seed
    if feature_dim is not None:
        return build_head(m, feature_dim, seed)
    model = build_model(m, n_outputs(spec), weights, backbone_seed)
    if m.arch == "transfer":  # same head as on the cache, whatever the backbone consumed
        model.head = build_head(m, model.backbone.dim, seed)
    return model


def train_settings(spec: RunSpec, targets, **over) -> tuple[TrainSpec, list[float] | None]:
    """The run's ``train`` block with ``over`` replacing fields (a stage's epochs or rate), and the
    class weights computed from ``targets`` where ``train.class_weights`` is ``balanced`` (else None)."""
    from .training import class_weights

    t = replace(spec.train, **over) if over else spec.train
    return t, class_weights(targets, len(spec.classes)) if t.class_weights == "balanced" else None


def fingerprint(spec: RunSpec, weights: str | None, backbone_seed: int, *files) -> str:
    """What a per-epoch checkpoint must match to be resumed: the run's spec, the backbone's weights
    (the file's bytes, not only its path) and seed, and every input file (split table, features,
    a model it starts from), read whole."""
    h = hashlib.sha256(json.dumps([spec.as_dict(), backbone_seed], sort_keys=True, default=str).encode())
    for f in (weights, *files):
        h.update(b"|")
        if f:
            with open(f, "rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def fit(model, spec: RunSpec, train_ds, val_ds, checkpoint=None, fingerprint: str = "", progress: bool = True,
        accel=None, **over):
    """Train ``model`` on ``train_ds`` with the run's settings; returns (model, history)."""
    from ..accel import from_train
    from .training import fit as fit_loop

    train, weights = train_settings(spec, train_ds.targets, **over)
    return fit_loop(model, train_ds, val_ds, train, weights, checkpoint=checkpoint, fingerprint=fingerprint,
                    progress=progress, accel=accel or from_train(train))


def predict_splits(model, table: pd.DataFrame, spec: RunSpec, make_ds: Callable[[pd.DataFrame], object],
                   splits=SPLITS, accel=None, name: str = "the model") -> pd.DataFrame:
    """One prediction row per image of each of ``splits`` (:func:`medrepro.metrics.prediction_table`),
    the threshold of a binary task the spec's ``threshold``. Probabilities that are not finite stop
    here, naming ``name`` (the run), the split and the images, never downstream in a metric."""
    import numpy as np

    from ..accel import from_train
    from .models import l2_penalty
    from .training import predict_proba

    accel = accel or from_train(spec.train)
    penalty, names = l2_penalty(model), class_names(spec)
    frames = []
    for s in splits:
        part = table[table["split"] == s]
        if len(part):
            proba = predict_proba(model, make_ds(part), accel=accel)
            bad = ~np.isfinite(proba).all(axis=1)
            if bad.any():
                ids = part["image_id"].to_numpy()[bad][:3].tolist()
                raise FloatingPointError(
                    f"{name}: {int(bad.sum())} of {len(part)} {s} images get NaN or infinite class probabilities "
                    f"(e.g. {ids}): the model's outputs are not finite"
                    + (" (float16 overflow under mixed precision: set train.amp false)" if accel.amp else ""))
            frames.append(prediction_table(part["image_id"], part["target"].astype(int), proba, names, s,
                                           spec.threshold, penalty))
    return pd.concat(frames, ignore_index=True)


def save(path, model, spec: RunSpec, weights: str | None, backbone_seed: int, feature_dim: int | None,
         runtime: dict | None = None) -> None:
    """The run's model file: the weights that train (a frozen transfer model's head alone), the spec
    that rebuilds it, its classes, the backbone's weights file and seed, and the device it ran on."""
    import torch

    head_only = spec.model.frozen_transfer
    if feature_dim is None and hasattr(model, "backbone"):
        feature_dim = model.backbone.dim
    state = model.cpu().state_dict()
    if head_only and hasattr(model, "head"):
        state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "spec": spec.as_dict(), "classes": class_names(spec), "head_only": head_only,
                    "feature_dim": feature_dim, "weights": weights, "backbone_seed": backbone_seed,
                    "runtime": runtime}, tmp)


def load(path, on_backbone: bool = False) -> tuple[nn.Module, dict]:
    """A model file written by :func:`save` and its contents (``spec`` as a :class:`RunSpec`).  A
    frozen transfer model loads as its head (for cached features); with ``on_backbone`` the head is
    put back on its backbone, rebuilt from the file's weights and seed (for images)."""
    import torch

    from .models import TransferNet, build_backbone, build_head, build_model

    ck = torch.load(path, map_location="cpu", weights_only=False)
    spec = ck["spec"] = run_spec(ck["spec"], str(path))
    if ck["head_only"]:
        model = build_head(spec.model, ck["feature_dim"])
        model.load_state_dict(ck["state_dict"])
        if on_backbone:
            model = TransferNet(build_backbone(spec.model, ck["weights"], ck["backbone_seed"]), model)
    else:
        model = build_model(spec.model)
        model.load_state_dict(ck["state_dict"])
    return model, ck
