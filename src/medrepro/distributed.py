"""Data-parallel training on several GPUs of one node (DistributedDataParallel, as the
torchvision reference scripts train), started from inside a rule: :func:`launch` spawns one
process per GPU, each joins the process group and runs the same step; rank 0 writes the
outputs and the log.  With one GPU (or none) the step runs in the calling process.

Every rank sees the same global batches as a single process would (the same seeded shuffle,
each batch split across the ranks) and DDP averages the gradients, so a run on N GPUs follows
the single-GPU run up to floating-point reduction order, per-rank dropout masks and per-rank
BatchNorm statistics.  On a CPU the same code runs with the gloo backend (the tests do).
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", rank()))


class ShardedBatchSampler(torch.utils.data.Sampler):
    """The batches a single process would draw (a seeded permutation cut into ``batch_size``
    chunks), each split into ``world`` near-equal shards; this rank yields its shard.  Batches
    with fewer samples than ranks are skipped (every rank must take part in each step)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, rank: int, world: int):
        self.n, self.batch_size, self.generator, self.rank, self.world = n, batch_size, generator, rank, world

    def _batches(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        for k in range(0, self.n, self.batch_size):
            chunk = order[k:k + self.batch_size]
            if len(chunk) >= self.world:
                yield [int(i) for i in np.array_split(np.asarray(chunk), self.world)[self.rank]]

    def __iter__(self):
        return self._batches()

    def __len__(self):
        return sum(1 for k in range(0, self.n, self.batch_size) if min(self.batch_size, self.n - k) >= self.world)


def all_sum(*values: float) -> list[float]:
    """Sum numbers over the ranks (identity in a single process)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model DDP trains (the model itself in a single process)."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank_: int, world: int, backend: str, port: int, log: str | None, threads: int, fn, args, kwargs):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank_), LOCAL_RANK=str(rank_),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device(rank_)
    dist.init_process_group(backend, rank=rank_, world_size=world)
    try:
        if rank_ == 0 and log:
            from .io import logging_to

            with logging_to(log, mode="a"):
                print(f"data-parallel training: {world} processes, backend {backend}", file=sys.stderr)
                fn(*args, **kwargs)
        else:
            fn(*args, **kwargs)
    finally:
        dist.destroy_process_group()


def launch(world: int, fn, *args, backend: str | None = None, log: str | Path | None = None, **kwargs):
    """Run ``fn(*args, **kwargs)`` on ``world`` processes (one per GPU; gloo on a CPU), or
    directly when ``world`` <= 1.  ``log``: the rule's log, which rank 0 appends to."""
    if world <= 1:
        return fn(*args, **kwargs)
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl" and torch.cuda.device_count() < world:
        raise RuntimeError(f"{world} GPUs asked for, {torch.cuda.device_count()} visible")
    threads = max(1, torch.get_num_threads() // world)
    torch.multiprocessing.spawn(_entry, args=(world, backend, _free_port(), str(log) if log else None, threads, fn,
                                              args, kwargs), nprocs=world, join=True)
    return None
