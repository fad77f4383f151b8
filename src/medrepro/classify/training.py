"""Seeded training of a classifier with Keras-like callbacks, resumable per epoch.

Determinism: every epoch re-seeds torch, the shuffling generator and the
augmentation from ``(seed, epoch)``, so an interrupted run that resumes from its
last epoch checkpoint ends with the same weights as an uninterrupted one, and
two runs with one config give the same numbers on the CPU.

Losses and callbacks follow Keras (TensorFlow 2.x, the papers' framework): ``val_loss`` is
the unweighted data loss plus the L2 penalty; ``class_weight`` weighs each training sample and
the batch mean divides by the batch size; early stopping on ``val_loss`` with ``patience`` and
``min_delta``; reduce-LR-on-plateau via :class:`torch.optim.lr_scheduler.ReduceLROnPlateau` with an
absolute ``min_delta``. The weights a run ends with (``tested_weights``): ``restore`` is Keras'
``EarlyStopping(restore_best_weights=True)``, the last epoch that improved by more than
``min_delta``, brought back only when training stops early; ``best`` is a
``ModelCheckpoint(monitor='val_loss', save_best_only=True)`` file loaded before testing, the epoch
of the lowest ``val_loss`` (strictly lower than every earlier one); ``last`` the last epoch's.
A loss that is not finite stops the run with the epoch and what to change (never a model whose
predictions are NaN).
"""
from __future__ import annotations

import copy
import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import distributed
from ..accel import Accel, deterministic_setting, epoch_seed, from_train, log_line, resolve, seed_everything
from ..specs import TrainSpec
from .models import Normalization, l2_penalty, regularization_loss

log = logging.getLogger(__name__)
KERAS_EPSILON = 1e-7  # keras.optimizers.Adam's epsilon (added Keras' way: keras_adam_epsilon)


@dataclass
class EarlyStopping:
    """Keras ``EarlyStopping(monitor='val_loss')``: stop after ``patience`` epochs without
    an improvement larger than ``min_delta``."""

    patience: int
    min_delta: float
    restore_best_weights: bool
    best: float = float("inf")
    wait: int = 0
    best_epoch: int = -1

    def step(self, value: float, epoch: int) -> tuple[bool, bool]:
        """Return (improved, stop)."""
        if value < self.best - self.min_delta:
            self.best, self.wait, self.best_epoch = value, 0, epoch
            return True, False
        self.wait += 1
        return False, self.wait >= self.patience


def _loss_fn(n_outputs: int, class_weights, device):
    """Cross-entropy as Keras computes it with ``class_weight``: each sample's loss times the
    weight of its class, averaged over the batch size (Keras' ``SUM_OVER_BATCH_SIZE``, not over
    the sum of the weights), so the loss does not change with the batch composition's weights.
    One output unit: binary cross-entropy on the logit, weighted the same way."""
    w = torch.tensor(class_weights, dtype=torch.float32, device=device) if class_weights is not None else None

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if n_outputs == 1:
            per = nn.functional.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
        else:
            per = nn.functional.cross_entropy(logits, y, reduction="none")
        if w is not None:
            per = per * w[y]
        return per.mean()

    return loss


def _loss_and_correct(logits, y, loss_fn):
    if logits.shape[1] == 1:
        logits = logits[:, 0]
        correct = ((logits > 0).long() == y).sum()
    else:
        correct = (logits.argmax(1) == y).sum()
    return loss_fn(logits, y), correct


def evaluate_loss(model, loader, loss_fn, accel: Accel) -> tuple[float, float]:
    """Keras' ``val_loss`` and accuracy: the unweighted data loss averaged over the samples plus
    the model's L2 penalty (Keras adds its regularisation losses to every reported loss)."""
    model.eval()
    total, n, correct = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = accel.batch(x), y.to(accel.device, non_blocking=accel.non_blocking)
            loss, c = _loss_and_correct(model(x), y, loss_fn)
            total += float(loss.detach()) * len(y)
            correct += int(c)
            n += len(y)
    return total / max(n, 1) + l2_penalty(model), correct / max(n, 1)


def _in_memory(ds) -> bool:
    """Whether ``ds`` is tensors in memory (cached features): loader processes pay off for images read
    and augmented from disk, not for those (there they only fork a copy of the model per epoch)."""
    while isinstance(ds, torch.utils.data.Subset):
        ds = ds.dataset
    return isinstance(ds, torch.utils.data.TensorDataset)


def build_optimizer(model: nn.Module, cfg: TrainSpec, device: torch.device) -> torch.optim.Optimizer:
    """Adam over the trainable parameters, with Keras' epsilon; fused: one kernel for every
    parameter instead of a dozen tensor operations each (a stage-1 study head's Adam step in 0.58
    of the per-tensor loop's time on the CPU, bench/README.md)."""
    if cfg.optimizer != "adam":
        raise ValueError(f"train.optimizer {cfg.optimizer!r}; supported: 'adam'")
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=KERAS_EPSILON,
                            fused=device.type in ("cpu", "cuda"))


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainSpec):
    """Keras' ReduceLROnPlateau on val_loss (``train.reduce_lr``), or None."""
    if not cfg.reduce_lr:
        return None
    r = cfg.reduce_lr
    # Keras reduces once `patience` epochs in a row fail to improve; torch once more than
    # `patience` have: hence patience - 1; eps 0: Keras applies any reduction, however small
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=r.factor, patience=r.patience - 1, threshold=r.min_delta,
        threshold_mode="abs", min_lr=r.min_lr, eps=0.0)


def epoch_loader(train_ds, cfg: TrainSpec, epoch: int, workers: int, accel: Accel) -> DataLoader:
    """Epoch ``epoch``'s shuffled (and, with ``train.sampling``, resampled) training batches, seeded
    from ``(seed, epoch)``: the same on a resumed run. Data-parallel, each single-process batch is
    split across the ranks (the loader draws its workers' base seed from the generator before the
    sampler's permutation, as in a single process)."""
    e_seed = epoch_seed(cfg.seed, epoch)
    torch.manual_seed(e_seed)
    if hasattr(train_ds, "set_epoch_seed"):
        train_ds.set_epoch_seed(e_seed)
    gen = torch.Generator().manual_seed(e_seed)
    epoch_ds = train_ds
    if cfg.sampling != "none":
        epoch_ds = torch.utils.data.Subset(train_ds, resample_indices(train_ds.targets, cfg.sampling, e_seed))
    init = lambda w: np.random.seed((e_seed + w) % 2**32)  # noqa: E731
    rank, world = distributed.rank(), distributed.world_size()
    if world > 1:
        return DataLoader(epoch_ds, batch_sampler=distributed.ShardedBatchSampler(
            len(epoch_ds), cfg.batch_size, gen, rank, world), num_workers=workers,
            pin_memory=accel.pin_memory, worker_init_fn=init, generator=gen)
    return DataLoader(epoch_ds, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=workers,
                      pin_memory=accel.pin_memory, worker_init_fn=init)


def train_one_epoch(model: nn.Module, trained: nn.Module, loader, opt, scaler, loss_fn, accel: Accel,
                    bar_label: str | None = None) -> tuple[float, int, int]:
    """One pass over ``loader`` (``trained``: ``model`` or its data-parallel wrapper); the loss
    summed over the samples (with the L2 terms, as Keras reports it), their count and the correct
    ones, over every rank. Sums stay on the device and are read once: a read per step would make
    the host wait for the GPU at every batch."""
    device = accel.device
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    n, correct = 0, torch.zeros((), dtype=torch.long, device=device)
    for x, y in tqdm(loader, desc=bar_label, file=sys.stderr, disable=bar_label is None, mininterval=5.0,
                     leave=False):
        x, y = accel.batch(x), y.to(device, non_blocking=accel.non_blocking)
        opt.zero_grad(set_to_none=True)
        with accel.autocast():
            loss, c = _loss_and_correct(trained(x), y, loss_fn)
            loss = loss + regularization_loss(model)
        scaler.scale(loss).backward()
        keras_adam_epsilon(opt)
        scaler.step(opt)
        scaler.update()
        total += loss.detach().double() * len(y)
        correct += c
        n += len(y)
    return distributed.all_sum(float(total), n, int(correct))


def _check_finite(epoch: int, train_loss: float, val_loss: float, amp: bool) -> None:
    if not (np.isfinite(train_loss) and np.isfinite(val_loss)):
        raise FloatingPointError(
            f"epoch {epoch + 1}: the training loss is {train_loss} and val_loss {val_loss}: not finite"
            + (" (float16 overflow under mixed precision: set train.amp false)" if amp else " (lower train.lr?)"))


@dataclass
class _Kept:
    """The weights a run may end with, kept across epochs (and checkpoints): Keras' restore state
    (the last epoch better by more than min_delta) and ModelCheckpoint(save_best_only=True)'s
    (the lowest val_loss so far, strictly)."""

    best_state: dict | None = None
    best_val: float = float("inf")
    ck_state: dict | None = None
    ck_val: float = float("inf")
    stopped: bool = False
    stopper: dict | None = None

    def restore(self, stopper) -> None:
        """Early stopping's state as the checkpoint left it."""
        if stopper and self.stopper:
            stopper.__dict__.update(self.stopper)

    def update(self, model: nn.Module, val_loss: float, epoch: int, stopper, keep_best: bool) -> None:
        """After epoch ``epoch``: early stopping's step, and the weights either callback keeps."""
        if stopper:
            improved, self.stopped = stopper.step(val_loss, epoch)
            if improved:  # Keras keeps the weights of the last epoch better by more than min_delta
                self.best_val, self.best_state = val_loss, copy.deepcopy(model.state_dict())
            self.stopper = dict(stopper.__dict__)
        if keep_best and val_loss < self.ck_val:
            self.ck_val, self.ck_state = val_loss, copy.deepcopy(model.state_dict())


def _loss_fns(model: nn.Module, train_ds, class_weights: list[float] | None, accel: Accel):
    """The training loss (class weights weigh it alone, as Keras' class_weight does) and the
    validation loss, for the model's number of outputs."""
    model.eval()
    with torch.no_grad():
        n_outputs = model(accel.batch(train_ds[0][0][None])).shape[1]
    return _loss_fn(n_outputs, class_weights, accel.device), _loss_fn(n_outputs, None, accel.device)


def _adapt(model: nn.Module, train_ds, cfg: TrainSpec, accel: Accel, workers: int) -> None:
    """Adapt the normalisation layers to the training data (augmented inputs: drawn from a seed of
    their own)."""
    if hasattr(train_ds, "set_epoch_seed"):
        train_ds.set_epoch_seed(epoch_seed(cfg.seed, -1))
    adapt_normalization(model, train_ds, cfg.batch_size, accel, workers)


def _announce(cfg: TrainSpec, accel: Accel) -> bool:
    """Check ``tested_weights``; on the main process, say where the run trains; whether this is it."""
    if cfg.tested_weights not in ("restore", "best", "last"):
        raise ValueError(f"train.tested_weights {cfg.tested_weights!r}; expected restore, best or last")
    if distributed.rank():
        return False
    world = distributed.world_size()
    print(log_line(accel) + (f", data-parallel over {world} processes" if world > 1 else ""), file=sys.stderr,
          flush=True)
    return True


def fit(model: nn.Module, train_ds, val_ds, cfg: TrainSpec, class_weights: list[float] | None = None, *,
        checkpoint: str | Path | None = None, progress: bool = True, fingerprint: str = "",
        stop_after: int | None = None, accel: Accel | None = None) -> tuple[nn.Module, pd.DataFrame]:
    """Train ``model`` per ``cfg`` (a run's ``train`` block), each training sample's loss weighed by
    its class's ``class_weights`` (Keras' class_weight; None: 1); return the model (best weights
    when early stopping restores them) and its history.

    With ``checkpoint``, each epoch's state is saved there and a rerun resumes from it when it has the
    same ``fingerprint`` (config and data; :mod:`medrepro.checkpoint`).  ``stop_after`` ends after
    that many epochs, as an interruption would; ``accel`` overrides ``cfg``'s device settings (tests
    force GPU-only branches on the CPU with it).  AMP's scale is recorded per epoch (``amp_scale``)."""
    from .. import checkpoint as ckpt

    accel = accel or from_train(cfg)
    seed_everything(cfg.seed, deterministic_setting(cfg.deterministic, accel))
    main = _announce(cfg, accel)
    model = accel.model(model)
    loss_fn, val_loss_fn = _loss_fns(model, train_ds, class_weights, accel)
    opt = build_optimizer(model, cfg, accel.device)
    sched = build_scheduler(opt, cfg)
    stopper = EarlyStopping(**asdict(cfg.early_stopping)) if cfg.early_stopping else None
    trained = distributed.wrap(model, accel.device)  # DDP averages the gradients of the ranks' shards
    scaler = accel.scaler()
    amp_scaler = scaler if accel.amp else None  # checkpointed under AMP only
    workers = 0 if _in_memory(train_ds) else cfg.num_workers  # worker processes pay off for images on disk
    val_loader = DataLoader(val_ds, cfg.batch_size, shuffle=False, num_workers=workers, pin_memory=accel.pin_memory)
    state = ckpt.resume(checkpoint, fingerprint, "classifier", model=model, optimizer=opt, scheduler=sched,
                        scaler=amp_scaler, map_location=accel.device)
    history, kept = state.history, _Kept(**state.extra)
    kept.restore(stopper)
    _adapt(model, train_ds, cfg, accel, workers)

    for epoch in range(cfg.epochs if kept.stopped else state.epoch, cfg.epochs):
        label = f"epoch {epoch + 1}/{cfg.epochs}" if progress and main else None
        loader = epoch_loader(train_ds, cfg, epoch, workers, accel)
        total, n, correct = train_one_epoch(model, trained, loader, opt, scaler, loss_fn, accel, label)
        val_loss, val_acc = evaluate_loss(model, val_loader, val_loss_fn, accel)  # the whole set, on each rank
        _check_finite(epoch, total / max(n, 1), val_loss, accel.amp)
        row = {"epoch": epoch + 1, "loss": total / n, "accuracy": correct / n, "val_loss": val_loss,
               "val_accuracy": val_acc, "lr": opt.param_groups[0]["lr"]}
        if accel.amp:
            row["amp_scale"] = float(scaler.get_scale())
        history.append(row)
        if main:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  file=sys.stderr, flush=True)
        if sched:
            sched.step(val_loss)
        kept.update(model, val_loss, epoch, stopper, cfg.tested_weights == "best")
        if checkpoint and main:
            ckpt.save(checkpoint, fingerprint, "classifier", epoch, history, model, optimizer=opt, scheduler=sched,
                      scaler=amp_scaler, **kept.__dict__)
        if kept.stopped:
            print(f"early stopping after epoch {epoch + 1}", file=sys.stderr)
            break
        if stop_after is not None and epoch + 1 >= stop_after:  # interrupted: the last epoch's weights
            return model, pd.DataFrame(history)
    model.load_state_dict(tested_state(cfg, kept.stopped, stopper, kept.best_state, kept.ck_state, model))
    return model, pd.DataFrame(history)


def tested_state(cfg: TrainSpec, stopped: bool, stopper, best_state, ck_state, model: nn.Module) -> dict:
    """The weights the run ends with (``cfg.tested_weights``): Keras' restore (the best epoch, only
    when training stopped early: a run to the last epoch keeps its weights), the best-val_loss
    checkpoint, or the last epoch's."""
    if cfg.tested_weights == "best" and ck_state is not None:
        return ck_state
    if cfg.tested_weights == "restore" and stopped and stopper.restore_best_weights and best_state is not None:
        return best_state
    return model.state_dict()


def keras_adam_epsilon(opt: torch.optim.Optimizer, epsilon: float = KERAS_EPSILON) -> None:
    """Make torch's Adam step Keras': Keras adds ``epsilon`` to sqrt(v) and folds the bias corrections
    into the step size (``lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + eps)``), torch adds it
    after correcting v (``lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)``). The two are
    one update when torch's eps is ``epsilon / sqrt(1 - b2**t)`` at step t, set here before each step
    (from the optimizer's own step count, so a resumed run continues it). Without it, 6 Adam steps of
    cnn_kermany's CNN ended 1 % apart in loss from Keras' (tests/classify/test_keras_training.py)."""
    for group in opt.param_groups:
        states = (opt.state.get(p, {}) for p in group["params"])
        t = next((int(st["step"]) for st in states if "step" in st), 0) + 1
        group["eps"] = epsilon / math.sqrt(1.0 - group["betas"][1] ** t)


def adapt_normalization(model: nn.Module, dataset, batch_size: int, accel: Accel, workers: int = 0) -> int:
    """Adapt ``model``'s not-yet-adapted :class:`~medrepro.classify.models.Normalization` layers to the inputs
    they receive from ``dataset`` (in order, the model in inference mode), as Keras' ``adapt`` does
    before training.  Every rank sees the whole dataset, so the statistics agree. Returns how many
    layers were adapted (0 when none or all already were, e.g. after a resume)."""
    layers = [m for m in model.modules() if isinstance(m, Normalization) and not bool(m.adapted)]
    if not layers:
        return 0
    sums = {id(m): [0.0, 0.0, 0] for m in layers}

    def hook(mod, args):
        x = args[0].detach().double().flatten(1)
        s = sums[id(mod)]
        s[0], s[1], s[2] = s[0] + x.sum(0), s[1] + (x * x).sum(0), s[2] + x.shape[0]

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers):
                model(accel.batch(x))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    for m in layers:
        m.adapt(*sums[id(m)])
    log.info("adapted %d normalization layer(s) to %d training rows", len(layers), sums[id(layers[0])][2])
    return len(layers)


def resample_indices(targets, mode: str, seed: int) -> list[int]:
    """Indices of a class-balanced resampling of ``targets``: ``oversample`` draws every
    smaller class up to the largest with replacement; ``undersample`` draws every larger class
    down to the smallest without.  Seeded; sorted, so only the loader shuffles."""
    t = np.asarray(targets)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(t, return_counts=True)
    out = []
    for c in classes:
        idx = np.flatnonzero(t == c)
        if mode == "oversample":
            extra = rng.choice(idx, counts.max() - len(idx), replace=True)
            out.append(np.concatenate([idx, extra]))
        elif mode == "undersample":
            out.append(rng.choice(idx, counts.min(), replace=False))
        else:
            raise ValueError(f"train.sampling {mode!r}; expected none, oversample or undersample")
    return sorted(int(i) for i in np.concatenate(out))


def predict_proba(model: nn.Module, ds, batch_size: int = 64, accel: Accel | None = None) -> np.ndarray:
    """Class probabilities, (N, n_classes); a single-logit model gives [1 - p, p]."""
    accel = accel or resolve()
    model = accel.model(model).eval()
    out = []
    with torch.no_grad():
        for x, _ in DataLoader(ds, batch_size=batch_size, shuffle=False, pin_memory=accel.pin_memory):
            with accel.autocast():
                logits = model(accel.batch(x)).float()
            if logits.shape[1] == 1:
                p = torch.sigmoid(logits[:, 0])
                out.append(torch.stack([1 - p, p], 1).cpu())
            else:
                out.append(torch.softmax(logits, 1).cpu())
    return torch.cat(out).numpy()


def class_weights(targets, n_classes: int) -> list[float]:
    """Balanced weights, n / (k * count_c) over the k classes present (1.0 for a class absent from
    ``targets``): scikit-learn's ``compute_class_weight('balanced')`` formula (the tests compare the
    two), computed here because importing scikit-learn for it cost 0.8 s of every training job's start."""
    t = np.asarray(targets, dtype=int)
    counts = np.bincount(t, minlength=n_classes)
    present = counts > 0
    out = np.ones(n_classes)
    out[present] = len(t) / (present.sum() * counts[present])
    return out.tolist()
