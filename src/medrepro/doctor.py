"""``medrepro doctor``: what a run of the workflow will need, checked before it is submitted.

A cluster run that stops after a day in the queue on a missing Kaggle token, a wrong data path or
a torch build that cannot see the nodes' GPUs wastes the day; these checks take seconds on the
login node (or, with ``--gpu-node``, on a GPU node through ``srun``).  Each check gives
``ok``, ``warn`` (works, but not as a cluster run would want, or cannot be judged here) or
``fail`` (the run would stop), with the config key, file or command concerned and what to do.

Checked: the Python and the installed packages against ``constraints.txt``'s pins; the config
(schema and cross-checks, as the Snakefile validates it); each dataset's source (a local folder
that exists and is not empty, the ``kaggle`` command and an API token for Kaggle downloads, data
already downloaded); each weights entry (a local file that exists, or torchvision's download);
the GPUs the runs ask for (torch's CUDA build against the NVIDIA driver's, the devices torch
sees); detectron2 where an experiment uses it; with ``--profile``, the SLURM executor plugin,
``sbatch`` and the profile's partition; and the free space where results go.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    message: str


# ----------------------------------------------------------------------------- environment
def python_check(version=sys.version_info) -> Check:
    v = f"{version[0]}.{version[1]}.{version[2]}"
    if tuple(version[:2]) < (3, 11):
        return Check("python", FAIL, f"Python {v}; medrepro needs 3.11 or newer")
    return Check("python", OK, f"Python {v}")


def read_pins(constraints: str | Path) -> dict[str, str]:
    """The exact pins (``name==version``) of a pip constraints file, by canonical name."""
    pins = {}
    for line in Path(constraints).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            exact = [sp.version for sp in req.specifier if sp.operator == "=="]
            if exact:
                pins[canonicalize_name(req.name)] = exact[0]
    return pins


def packages_check(constraints: str | Path | None) -> Check:
    """Installed versions against the pins (local labels such as torch's ``+cu130`` aside); a
    package pinned but not installed is an extra's (``[slurm]``, ``[download]``, ``[test]``) and
    not counted."""
    if constraints is None or not Path(constraints).is_file():
        return Check("packages", WARN, "constraints.txt not found: installed versions not compared with the pins")
    differ = []
    for name, pin in sorted(read_pins(constraints).items()):
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(have).public != Version(pin).public:
            differ.append(f"{name} {have} (pinned {pin})")
    if differ:
        return Check("packages", WARN, f"{len(differ)} installed version(s) differ from {Path(constraints).name}: "
                     + "; ".join(differ[:8]) + ("; ..." if len(differ) > 8 else "")
                     + ". Numbers may differ from a pinned run: pip install -c constraints.txt -e .")
    return Check("packages", OK, f"installed versions match {Path(constraints).name}")


# ----------------------------------------------------------------------------- data and weights
def kaggle_token(env=os.environ, home: Path | None = None) -> str | None:
    """Where the Kaggle API finds credentials, or None: the ``KAGGLE_USERNAME`` and ``KAGGLE_KEY``
    variables, ``KAGGLE_API_TOKEN``, or ``kaggle.json`` / ``access_token`` in ``$KAGGLE_CONFIG_DIR``
    (default ``~/.kaggle``)."""
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME and KAGGLE_KEY"
    if env.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    folder = Path(env["KAGGLE_CONFIG_DIR"]) if env.get("KAGGLE_CONFIG_DIR") else (home or Path.home()) / ".kaggle"
    for name in ("kaggle.json", "access_token"):
        if (folder / name).is_file():
            return str(folder / name)
    return None


def dataset_checks(cfg: dict, env=os.environ, home: Path | None = None) -> list[Check]:
    out = []
    results = Path(cfg["results"])
    for name, ds in sorted(cfg["datasets"].items()):
        key = f"datasets.{name}"
        src = ds["source"]
        if src == "synthetic":
            out.append(Check(key, OK, "synthetic stand-ins in the real layout (the demo; no real data)"))
        elif src == "local":
            path = ds["path"]  # required with source 'local' (the config's cross-checks)
            if not Path(path).is_dir():
                out.append(Check(key, FAIL, f"{key}.path: {path} is not a folder"))
            elif not any(Path(path).iterdir()):
                out.append(Check(key, FAIL, f"{key}.path: {path} is empty"))
            else:
                out.append(Check(key, OK, f"local data in {path}"))
        else:
            dl = ds["download"]
            raw = results / "raw" / name
            if (results / "raw" / f"{name}.sha256").is_file():
                out.append(Check(key, OK, f"downloaded already ({raw}; its SHA-256 manifest is checked on every run)"))
            elif dl["kind"] == "urls":
                hosts = sorted({re.sub(r"^\w+://([^/]+).*$", r"\1", f["url"]) for f in dl["files"]})
                out.append(Check(key, OK, f"{len(dl['files'])} file(s) from {', '.join(hosts)} "
                                          "(needs internet on the submitting node)"))
            else:
                what = f"Kaggle {'competition' if dl['kind'] == 'kaggle_competition' else 'dataset'} {dl['slug']}"
                token = kaggle_token(env, home)
                exe = shutil.which("kaggle", path=env.get("PATH"))
                if exe is None:
                    out.append(Check(key, FAIL, f"{what}: the 'kaggle' command is not installed "
                                                "(pip install -e \".[download]\")"))
                elif token is None:
                    out.append(Check(key, FAIL, f"{what}: no Kaggle API token (~/.kaggle/kaggle.json, or "
                                                "KAGGLE_USERNAME and KAGGLE_KEY; https://www.kaggle.com/docs/api)"))
                else:
                    extra = " (its rules must be accepted on kaggle.com)" if dl["kind"] == "kaggle_competition" else ""
                    out.append(Check(key, OK, f"{what} with the token from {token}{extra}"))
    return out


def weights_checks(cfg: dict) -> list[Check]:
    out = []
    for name, w in sorted(cfg["weights"].items()):
        key = f"weights.{name}"
        if w is None:
            out.append(Check(key, OK, "none: random initialisation"))
        elif w == "imagenet":
            have = Path(cfg["results"]) / "weights" / f"{name}.pth"
            out.append(Check(key, OK, f"downloaded already ({have})" if have.is_file() else
                             "torchvision's file, downloaded by rule download_weights (needs internet)"))
        elif w == "keras":
            from .backbones import KERAS_WEIGHTS
            from .download import keras_cache_dirs

            have = Path(cfg["results"]) / "weights" / f"{name}.h5"
            file = Path(KERAS_WEIGHTS[name][0]).name if name in KERAS_WEIGHTS else None
            cached = [d / file for d in keras_cache_dirs() if file and (d / file).is_file()]
            if name not in KERAS_WEIGHTS:
                out.append(Check(key, FAIL, f"{key}: Keras has no application weights for {name}; "
                                            f"it has {sorted(KERAS_WEIGHTS)}"))
            elif have.is_file():
                out.append(Check(key, OK, f"downloaded already ({have})"))
            else:
                out.append(Check(key, OK, f"Keras' {file}, copied from {cached[0]}" if cached else
                                 f"Keras' {file}, downloaded by rule download_weights (needs internet)"))
        elif Path(w).is_file():
            out.append(Check(key, OK, f"local file {w}"))
        else:
            out.append(Check(key, FAIL, f"{key}: {w} is not a file"))
    return out


# ----------------------------------------------------------------------------- GPUs
def driver_cuda(nvidia_smi_output: str) -> str | None:
    """The highest CUDA version the NVIDIA driver supports, from ``nvidia-smi``'s header."""
    m = re.search(r"CUDA Version:\s*([0-9]+\.[0-9]+)", nvidia_smi_output)
    return m[1] if m else None


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:2])


def gpu_checks(cfg: dict, on_gpu_node: bool = False, env=os.environ) -> list[Check]:
    """Whether the runs that ask for GPUs (``train.gpus``) will find them with this torch.  On a
    login node without GPUs a missing device is a warning (the jobs run elsewhere); with
    ``on_gpu_node`` it is a failure."""
    import torch

    from .accel import cuda_diagnosis

    runs = {**cfg.get("experiments", {}), **cfg.get("studies", {})}
    asking = sorted(n for n, r in runs.items() if r["train"]["gpus"] > 0)
    if not asking:
        return [Check("gpu", OK, "no run asks for a GPU (train.gpus is 0): every job runs on the CPU")]
    who = f"{len(asking)} run(s) ask for GPUs ({', '.join(asking[:4])}{', ...' if len(asking) > 4 else ''})"
    out = []
    built = torch.version.cuda
    if built is None:
        out.append(Check("gpu.torch", FAIL, f"{who} but torch {torch.__version__} is a CPU-only build"))
        return out
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi:
        try:
            text = subprocess.run([smi], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            text = ""
            out.append(Check("gpu.driver", WARN, f"nvidia-smi did not answer: {exc}"))
        drv = driver_cuda(text)
        if drv and _version(drv) < _version(built):
            out.append(Check("gpu.driver", FAIL, f"torch {torch.__version__} is built for CUDA {built} but the "
                             f"NVIDIA driver supports CUDA {drv} at most: install the torch build for the driver's "
                             "CUDA (README, 'GPU nodes')"))
        elif drv:
            out.append(Check("gpu.driver", OK, f"the driver supports CUDA {drv}; torch is built for {built}"))
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        out.append(Check("gpu.devices", OK, f"{who}; torch sees {len(names)}: {', '.join(names)}"))
    else:
        status = FAIL if on_gpu_node else WARN
        where = ("" if on_gpu_node else " (expected on a login node: run `srun --gpus=1 medrepro doctor "
                 "--gpu-node ...` to check a GPU node)")
        out.append(Check("gpu.devices", status, f"{who} but torch sees no GPU here{where}: {cuda_diagnosis()}"))
    return out


def detectron2_check(cfg: dict) -> list[Check]:
    using = sorted(n for n, e in cfg.get("experiments", {}).items()
                   if e.get("model", {}).get("detector", {}).get("backend") == "detectron2")
    if not using:
        return []
    if importlib.util.find_spec("detectron2") is not None:
        return [Check("detectron2", OK, f"installed, for {', '.join(using)}")]
    return [Check("detectron2", WARN, f"{', '.join(using)} use detectron2, which is not installed here: run with "
                  "--use-conda (envs/detectron2.yaml) or install it from source (README)")]


# ----------------------------------------------------------------------------- SLURM and disk
def slurm_checks(profile: str | Path, env=os.environ) -> list[Check]:
    path = Path(profile) / "config.yaml"
    if not path.is_file():
        return [Check("profile", FAIL, f"{path} does not exist")]
    prof = yaml.safe_load(path.read_text()) or {}
    if prof.get("executor") != "slurm":
        return [Check("profile", OK, f"{profile}: executor {prof.get('executor', 'local')!r}, no SLURM check")]
    out = []
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        out.append(Check("slurm.plugin", FAIL, "snakemake-executor-plugin-slurm is not installed "
                                               "(pip install -e \".[slurm]\")"))
    else:
        out.append(Check("slurm.plugin", OK, "snakemake-executor-plugin-slurm "
                         + importlib.metadata.version("snakemake-executor-plugin-slurm")))
    sbatch, sinfo = (shutil.which(c, path=env.get("PATH")) for c in ("sbatch", "sinfo"))
    if sbatch is None or sinfo is None:
        out.append(Check("slurm.commands", FAIL, "sbatch or sinfo is not on PATH: run this on the cluster's "
                                                 "submitting node"))
        return out
    try:
        res = subprocess.run([sinfo, "-h", "-o", "%P"], capture_output=True, text=True, timeout=60, env=dict(env))
    except subprocess.TimeoutExpired:
        return out + [Check("slurm.partition", FAIL, "sinfo did not answer within 60 s")]
    if res.returncode != 0:
        said = " ".join((res.stderr or res.stdout).split())
        return out + [Check("slurm.partition", FAIL, f"sinfo failed (is this the cluster's submitting node?): "
                                                     f"{said[:300]}")]
    parts = [p.strip() for p in res.stdout.split() if p.strip()]
    default = next((p.rstrip("*") for p in parts if p.endswith("*")), None)
    names = [p.rstrip("*") for p in parts]
    want = (prof.get("default-resources") or {}).get("slurm_partition")
    if want and want not in names:
        out.append(Check("slurm.partition", FAIL, f"{path}: slurm_partition {want!r} is not one of the cluster's "
                                                  f"partitions {names}"))
    elif want:
        out.append(Check("slurm.partition", OK, f"partition {want!r}"))
    elif default:
        out.append(Check("slurm.partition", OK, f"the cluster's default partition {default!r} (slurm_partition "
                                                "not set in the profile)"))
    else:
        out.append(Check("slurm.partition", FAIL, f"the cluster has no default partition: set slurm_partition "
                                                  f"under default-resources in {path} (one of {names})"))
    return out


def disk_check(results: str | Path) -> Check:
    where = Path(results).resolve()
    probe = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / 2**30
    return Check("disk", OK, f"{free:,.0f} GiB free at {probe} (results go to {results})")


# ----------------------------------------------------------------------------- all
def run_checks(config_dir: str | Path = "config", overlays=(), profile: str | Path | None = None,
               on_gpu_node: bool = False, constraints: str | Path | None = None,
               env=os.environ, home: Path | None = None) -> list[Check]:
    """Every check, in order; a config that does not validate stops the checks that read it."""
    from .config import ConfigError, load_config

    checks = [python_check(), packages_check(constraints)]
    if not (Path(config_dir) / "config.yaml").is_file():
        return checks + [Check("config", FAIL, f"{Path(config_dir) / 'config.yaml'} not found: run medrepro in the "
                                               "workflow's folder (the one holding config/), or give --config-dir")]
    try:
        cfg = load_config(config_dir, overlays)
    except (ConfigError, OSError, yaml.YAMLError) as exc:
        return checks + [Check("config", FAIL, str(exc))]
    papers = ", ".join(sorted(cfg.get("papers", {})))
    checks.append(Check("config", OK, f"valid ({cfg['scale']} scale, paper settings {cfg['paper_settings']}; "
                                      f"papers {papers})"))
    checks += dataset_checks(cfg, env, home) + weights_checks(cfg)
    checks += gpu_checks(cfg, on_gpu_node, env) + detectron2_check(cfg)
    if profile:
        checks += slurm_checks(profile, env)
    checks.append(disk_check(cfg["results"]))
    return checks


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{c.status:4}  {c.name:{width}}  {c.message}" for c in checks]
    n_fail = sum(c.status == FAIL for c in checks)
    n_warn = sum(c.status == WARN for c in checks)
    lines.append(f"\n{n_fail} failure(s), {n_warn} warning(s)"
                 + (": the run would stop; fix the failures first" if n_fail else ""))
    return "\n".join(lines)
