"""Where a result came from: project commit, config digest, package versions, device, threads.

:func:`record` is written into every ``metrics.json`` (``provenance``), beside every paper's
tables and figures (``provenance.json``, and a line under each Markdown and LaTeX table) and into
the report, so a number can be traced to the code, settings and machine that produced it:

- ``commit`` and ``dirty``: the git commit of the project checkout holding this package (or, for an
  installed package, of the working directory), and whether tracked files differ from it;
  ``null`` outside a git checkout;
- ``config_sha256``: a digest of the config section the step was given (the experiment or study),
  canonical JSON, so unrelated config edits leave it alone; a paper's tables digest the paper's
  block together with the digests of the runs they read, so changing any of its experiments
  changes it;
- ``versions`` of the packages that shape the numbers; ``device``, ``gpu``, ``threads`` of the step
  (and ``trained_on``: the training step's, read from the model summary, where there is one,
  with its ``cpu`` and ``cpu_capability``, the instruction set torch chose its CPU kernels for).

No time stamp: on one machine, a rerun of the same commit and config writes the same bytes; on a
CPU of another capability (AVX2 against AVX512, say) the floats differ in their last bits, and a
trained model can end a few predictions apart.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

# the packages whose versions can change a number: pillow decodes the images (its libjpeg-turbo the
# JPEG DICOMs and JPEG files), opencv-python-headless warps the augmented ones, timm builds EfficientNet-B4
PACKAGES = ("medrepro", "torch", "torchvision", "numpy", "pandas", "scikit-learn", "scipy", "albumentations",
            "pydicom", "pillow", "opencv-python-headless", "timm", "pycocotools", "snakemake", "detectron2")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


@cache
def git_state(start: str | None = None) -> dict:
    """``{"commit", "dirty"}`` of the git checkout holding ``start`` (default: this package's folder,
    then the working directory); ``None`` values outside one."""
    for where in ([Path(start)] if start else [Path(__file__).resolve().parent, Path.cwd()]):
        top = _git(["rev-parse", "--show-toplevel"], where)
        if top is None:
            continue
        top_path = Path(top.strip())
        commit = (_git(["rev-parse", "HEAD"], top_path) or "").strip() or None
        status = _git(["status", "--porcelain", "--untracked-files=no"], top_path)
        return {"commit": commit, "dirty": None if status is None else bool(status.strip())}
    return {"commit": None, "dirty": None}


def config_sha256(section) -> str:
    """A digest of a config section (or of a spec: :func:`medrepro.specs.as_plain`): canonical
    JSON (sorted keys), first 16 hex digits of SHA-256."""
    if dataclasses.is_dataclass(section):
        from .specs import as_plain

        section = as_plain(section)
    return hashlib.sha256(json.dumps(section, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _build_version(package: str) -> str | None:
    """``package.__version__`` with its build tag (torch's 2.14.1+cu130; the wheel's metadata says
    2.14.1), read from the package's ``version.py`` without importing the package (importing torch
    costs seconds in steps that never use it)."""
    if package in sys.modules:
        return getattr(sys.modules[package], "__version__", None)
    from importlib.util import find_spec

    spec = find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        f = Path(folder) / "version.py"
        if f.is_file():
            m = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", f.read_text(), re.M)
            if m:
                return m.group(1)
    return None


@cache
def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    for p in ("torch", "torchvision"):  # their own version strings name the build (2.14.1+cu130)
        v = _build_version(p)
        if v:
            out[p] = v
    return out


def runtime_from_summary(summary_csv) -> dict | None:
    """The training step's runtime (device, GPU, torch, CUDA, AMP, threads) from the ``runtime: *`` rows
    a model summary ends with; None when the file has none."""
    if summary_csv is None or not Path(summary_csv).is_file():
        return None
    import pandas as pd

    df = pd.read_csv(summary_csv)
    col = next((c for c in ("output_shape", "type") if c in df.columns), None)
    rows = df[df["layer"].astype(str).str.startswith("runtime: ")] if col else df.iloc[:0]
    return {r["layer"][len("runtime: "):]: (None if pd.isna(r[col]) or str(r[col]) == "None" else str(r[col]))
            for _, r in rows.iterrows()} or None


def record(section=None, trained_on: dict | None = None) -> dict:
    """The provenance of a result written now by this process (see the module docstring).  A step
    that never imported torch ran on the CPU only; its ``threads`` is then null (no torch thread
    pool), and torch is not imported just to say so."""
    torch = sys.modules.get("torch")
    cuda = bool(torch and torch.cuda.is_available())
    out = {**git_state(), "config_sha256": config_sha256(section) if section is not None else None,
           "versions": versions(), "device": "cuda" if cuda else "cpu",
           "gpu": torch.cuda.get_device_name(0) if cuda else None,
           "threads": torch.get_num_threads() if torch else None,
           "host": platform.node(), "slurm_job": os.environ.get("SLURM_JOB_ID")}
    if trained_on:
        out["trained_on"] = trained_on
    return out


def short(p: dict | None) -> str:
    """One line for a table's footer: commit (dirty), config digest, torch, device."""
    if not p:
        return "provenance: not recorded"
    commit = (p.get("commit") or "no git checkout")[:12] + (" (uncommitted changes)" if p.get("dirty") else "")
    return (f"medrepro commit {commit}; config {p.get('config_sha256')}; torch {p['versions'].get('torch')}; "
            f"{p.get('device')}{' ' + p['gpu'] if p.get('gpu') else ''}"
            f"{', %s threads' % p['threads'] if p.get('threads') is not None else ''}")
