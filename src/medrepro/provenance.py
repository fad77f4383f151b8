"""Where a result came from: project commit, config digest, package versions, device, threads.

:func:`record` is written into every ``metrics.json`` (``provenance``), beside every paper's
tables and figures (``provenance.json``, and a line under each Markdown and LaTeX table) and into
the report, so a number can be traced to the code, settings and machine that produced it:

- ``commit`` and ``dirty``: the git commit of the project checkout holding this package (or, for an
  installed package, of the working directory), and whether tracked files differ from it;
  ``null`` outside a git checkout;
- ``config_sha256``: a digest of the config section the step was given (the experiment, study or
  paper), canonical JSON, so unrelated config edits leave it alone;
- ``versions`` of the packages that shape the numbers; ``device``, ``gpu``, ``threads`` of the step
  (and ``trained_on``: the training step's, read from the model summary, where there is one).

No time stamp: on one machine, a rerun of the same commit and config writes the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("medrepro", "torch", "torchvision", "numpy", "pandas", "scikit-learn", "scipy", "albumentations",
            "pydicom", "pycocotools", "snakemake", "detectron2")


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
    """A digest of a config section: canonical JSON (sorted keys), first 16 hex digits of SHA-256."""
    return hashlib.sha256(json.dumps(section, sort_keys=True, default=str).encode()).hexdigest()[:16]


@cache
def versions() -> dict:
    import torch
    import torchvision

    out = {"python": sys.version.split()[0]}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    # torch's own version string names its build (2.14.1+cu130); the package metadata may not
    out.update(torch=torch.__version__, torchvision=torchvision.__version__)
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
    """The provenance of a result written now by this process (see the module docstring)."""
    import torch

    cuda = torch.cuda.is_available()
    out = {**git_state(), "config_sha256": config_sha256(section) if section is not None else None,
           "versions": versions(), "device": "cuda" if cuda else "cpu",
           "gpu": torch.cuda.get_device_name(0) if cuda else None, "threads": torch.get_num_threads(),
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
            f"{p.get('device')}{' ' + p['gpu'] if p.get('gpu') else ''}, {p.get('threads')} threads")
