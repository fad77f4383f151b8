"""Where a model runs, and the settings that only matter on a GPU.

One :class:`Accel` is resolved per training or prediction step from the config
(``train.device``, ``train.gpus``, ``train.amp``, the top-level ``allow_cpu``).
Every branch that would otherwise run only on a GPU reads a flag of it
(``amp``, ``channels_last``, ``pin_memory``, ``non_blocking``), so a test on a
CPU can switch each one on and run that branch.

A step whose rule asked the cluster for GPUs (``train.gpus > 0``) and finds no
CUDA device stops with :class:`DeviceError` instead of quietly training on the
CPU for days, unless ``allow_cpu`` says that is wanted (the test suite's fake
GPUs).  :func:`describe` gives what every log and model file records: device,
GPU name, torch, CUDA and cuDNN versions, AMP, threads, SLURM job.
"""
from __future__ import annotations

import os
import platform
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .specs import DeviceSpec, TrainSpec


class DeviceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Accel:
    device: torch.device
    amp: bool = False
    channels_last: bool = False
    pin_memory: bool = False
    non_blocking: bool = False

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device; image batches (rank 4) go channels-last when set."""
        x = x.to(self.device, non_blocking=self.non_blocking)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def autocast(self):
        """Mixed precision: float16 on CUDA, bfloat16 on the CPU (forced in tests)."""
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, active with AMP; its state belongs in every checkpoint."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp)


def cuda_diagnosis() -> str:
    """Why torch sees no GPU, in words a user can act on."""
    built = torch.version.cuda or "none (a CPU-only build)"
    vis = os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)")
    return (f"torch {torch.__version__} built for CUDA {built}; CUDA_VISIBLE_DEVICES={vis}; "
            f"torch.cuda.device_count()={torch.cuda.device_count()}. A torch wheel built for a newer CUDA than "
            "the node's NVIDIA driver supports sees no GPU: install the build matching the driver (README, "
            "'GPU nodes'), or set allow_cpu: true to run on the CPU on purpose")


def resolve(device: str = "auto", gpus: int = 0, amp: bool = True, allow_cpu: bool = False,
            channels_last: bool = True) -> Accel:
    """The accelerator of a step.  ``gpus``: how many GPUs its rule asked for.  ``channels_last``
    holds on the CPU too: oneDNN's convolutions run up to 1.7x faster on it (bench/README.md)."""
    has_cuda = torch.cuda.is_available()
    if device == "auto":
        dev = torch.device("cuda" if has_cuda else "cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and not has_cuda:
            raise DeviceError(f"train.device is {device!r} but no CUDA device is usable: {cuda_diagnosis()}")
    if dev.type == "cuda" and dev.index is None:
        from .distributed import active, local_rank

        if active():  # one GPU per process of a data-parallel step
            dev = torch.device("cuda", local_rank())
    if gpus > 0 and dev.type != "cuda" and not allow_cpu:
        raise DeviceError(f"this job asked for {gpus} GPU(s) (train.gpus) but runs on the CPU: {cuda_diagnosis()}")
    on_gpu = dev.type == "cuda"
    return Accel(dev, amp=amp and on_gpu, channels_last=channels_last, pin_memory=on_gpu, non_blocking=on_gpu)


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux; the platform's word elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(accel: Accel) -> dict:
    """What ran the step: recorded in logs, model files and model summaries.  ``cpu_capability``
    is the instruction set torch chose its CPU kernels for (AVX2, AVX512, ...): a CPU run is
    repeatable bit for bit on CPUs of the same capability; on another, floats differ in their last
    bits and a trained model can end a few predictions apart."""
    d = accel.device
    gpu = torch.cuda.get_device_name(d) if d.type == "cuda" else None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"device": str(d), "gpu": gpu, "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": cudnn, "amp": accel.amp, "channels_last": accel.channels_last,
            "threads": torch.get_num_threads(), "deterministic": torch.are_deterministic_algorithms_enabled(),
            "host": platform.node(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"), "python": sys.version.split()[0],
            **{k: v for k, v in asdict(accel).items() if k in ("pin_memory", "non_blocking")}}


def log_line(accel: Accel) -> str:
    info = describe(accel)
    return "runtime: " + ", ".join(f"{k}={v}" for k, v in info.items())


def from_train(train: TrainSpec | DeviceSpec, channels_last: bool | None = None) -> Accel:
    """The accelerator of a run's ``train`` block (or of a device block); ``channels_last=False``
    for a model that does not use the memory format (the detectors: their logs then do not claim it)."""
    if channels_last is None:
        channels_last = train.channels_last
    return resolve(train.device, train.gpus, train.amp, train.allow_cpu, channels_last)


def summary_rows(accel: Accel, column: str = "output_shape") -> list[dict]:
    """Rows for a model summary table (``layer``, ``column``, ``params``, ``trainable``) saying what trained it."""
    keep = ("device", "gpu", "cpu", "cpu_capability", "torch", "cuda", "cudnn", "amp", "threads")
    return [{"layer": f"runtime: {k}", column: str(v), "params": None, "trainable": None}
            for k, v in describe(accel).items() if k in keep]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; with ``deterministic``, torch's deterministic algorithms
    (warning where an op has none) and no cuDNN autotuning; without, cuDNN picks its fastest
    algorithms (on a GPU the switch trades bitwise repeatability for speed)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def deterministic_setting(value, accel: Accel, roi_align: bool = False) -> bool:
    """``train.deterministic`` resolved for a step: ``auto`` is on, except on a GPU for models with
    RoIAlign (Mask R-CNN): with deterministic algorithms on, torchvision replaces its CUDA RoIAlign
    by a pure-torch one whose intermediate tensor (boxes x channels x bins x samples) did not fit an
    80-GB GPU at 1,024 px, batch 12, and took 20 s per iteration (bench/gpu.py)."""
    if value in (True, False):
        return value
    if value not in (None, "auto"):
        raise ValueError(f"train.deterministic {value!r}; expected auto, true or false")
    return not (roi_align and accel.device.type == "cuda")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch of a run seeded with ``seed``, for every model the package trains (torch,
    the shuffling generator, the augmentation): distinct for every (seed, epoch) pair with
    epoch < 100,003, so a resumed run re-draws exactly what an uninterrupted one drew. Never negative
    (numpy's generators refuse negative seeds): seed 0's epoch -1, the draw before training, wraps
    to 2**63 - 1."""
    return (int(seed) * 100003 + int(epoch)) % 2**63


def sample_seed(epoch_seed: int, index: int) -> int:
    """The augmentation seed of image ``index`` in the epoch seeded ``epoch_seed``.

    albumentations 2 draws from its Compose's own generator, which a DataLoader copies into every
    worker process: seeded once per epoch, each worker would repeat the others' draws (16 images, 2
    workers: 8 distinct augmentations) and the results would change with the worker count. Seeded
    per image from (epoch seed, index), every image draws its own, whatever process reads it."""
    return int(np.random.SeedSequence([int(epoch_seed), int(index)]).generate_state(1, np.uint64)[0] % 2**63)
