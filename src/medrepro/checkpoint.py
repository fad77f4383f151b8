"""One checkpoint and resume protocol for every training engine (the classifier's ``fit``, the
torchvision and the detectron2 Mask R-CNN), and one file schema per trained model.

A training run given a checkpoint path saves after every epoch what the next epoch needs (model,
optimizer, learning-rate schedule, AMP's gradient scaler, history, the last finished epoch and the
engine's own extras) with a fingerprint of the config, weights and data that made it; a rerun (a
SLURM requeue, a Ctrl-C) resumes from it when the fingerprint is the same and starts over, saying
so once, when it is not. Every epoch reseeds from ``(seed, epoch)``, so a resumed run ends with the
uninterrupted run's weights; the file is removed when the run finishes (:func:`finish`).

The batches of an epoch of ``steps`` iterations come from :func:`epoch_batches` in both detector
engines.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .io import atomic_path

SCHEMA = 2  # 1: each engine's own keys (such a file is not resumed: the run starts over)


@dataclass
class Resumed:
    """What a run resumes from: ``epoch`` epochs done (0: a fresh start), their ``history``, and
    the checkpoint's ``extra`` (the engine's own state: early stopping, best weights, a trainer)."""

    epoch: int = 0
    history: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def resume(path, fingerprint: str, engine: str, *, model=None, optimizer=None, scheduler=None, scaler=None,
           map_location="cpu") -> Resumed:
    """The state a run starts from: the checkpoint at ``path``, loaded into the given objects, when
    ``engine`` wrote it for ``fingerprint`` with this schema; a fresh start otherwise (saying on
    stderr why an existing file is not resumed)."""
    if not path or not Path(path).is_file():
        return Resumed()
    ck = torch.load(path, map_location=map_location, weights_only=False)
    if (ck.get("schema"), ck.get("engine"), ck.get("fingerprint")) != (SCHEMA, engine, fingerprint):
        print(f"ignoring {path}: written for another config, weights, data, engine or version; "
              "training from the start", file=sys.stderr, flush=True)
        return Resumed()
    if model is not None:
        model.load_state_dict(ck["model"])
    for obj, key in ((optimizer, "optimizer"), (scheduler, "scheduler"), (scaler, "scaler")):
        if obj is not None and ck.get(key):
            obj.load_state_dict(ck[key])
    done = ck["epoch"] + 1
    print(f"resumed from {path} after epoch {done}", file=sys.stderr, flush=True)
    return Resumed(done, list(ck["history"]), dict(ck["extra"]))


def save(path, fingerprint: str, engine: str, epoch: int, history: list, model, *, optimizer=None, scheduler=None,
         scaler=None, **extra) -> None:
    """Write, atomically, the state after epoch ``epoch`` (from 0); ``extra``: the engine's own."""
    with atomic_path(path) as tmp:
        torch.save({"schema": SCHEMA, "engine": engine, "fingerprint": fingerprint, "epoch": epoch,
                    "history": history, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict() if optimizer is not None else None,
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None, "extra": extra}, tmp)


def finish(path) -> None:
    """Remove the checkpoint of a finished run: only an interrupted run needs it."""
    if path:
        Path(path).unlink(missing_ok=True)


def epoch_batches(n: int, steps: int, batch: int, gen: torch.Generator) -> list[list[int]]:
    """``steps`` batches of ``batch`` indices into ``n`` items, drawn without replacement and
    reshuffled with ``gen`` at each pass over the data."""
    order: list[int] = []
    while len(order) < steps * batch:
        order += torch.randperm(n, generator=gen).tolist()
    return [order[k * batch:(k + 1) * batch] for k in range(steps)]


def save_model(path, model, config: dict, weights: str, **about) -> None:
    """A trained model's file, one schema for every engine: the state, the model config that
    rebuilds it, what initialised it (``weights``) and ``about`` (the backend, the runtime, the
    experiment)."""
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "config": config, "weights": weights, **about}, tmp)
