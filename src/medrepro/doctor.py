"""``medrepro doctor``: what a run of the workflow will need, checked before it is submitted.

A cluster run that stops after a day in the queue on a missing Kaggle token, a wrong data path or
a torch build that cannot see the nodes' GPUs wastes the day; these checks take seconds on the
login node (or, with ``--gpu-node``, on a GPU node through ``srun``).  Each check gives
``ok``, ``warn`` (works, but not as a cluster run would want, or cannot be judged here) or
``fail`` (the run would stop), with the config key, file or command concerned and what to do.
Given snakemake's targets (paper names), only what those papers read is checked.

Checked: the Python and the installed packages against ``constraints.txt``'s pins; the config
(schema and cross-checks, as the Snakefile validates it); each dataset's source (a local folder
that exists and is not empty; for Kaggle, the ``kaggle`` command, the credentials where kaggle 2.x
finds them and, for a competition, its accepted rules; data already downloaded) and the DICOM
decoders its files need; each weights entry (a local file, or a download); the GPUs the runs ask
for (torch's CUDA build against the NVIDIA driver by NVIDIA's compatibility rules, the devices
torch sees); detectron2 where an experiment uses it; with ``--profile``, the SLURM executor plugin,
``sbatch`` and the profile's partition; and the free space where results go.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
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
@dataclass(frozen=True)
class KaggleCredentials:
    """Credentials as kaggle 2.x finds them: ``how`` (access token, API key, OAuth), ``where``
    (a file or the variables), and ``notes`` on what kaggle would ignore or warn about."""

    how: str | None
    where: str | None
    notes: tuple[str, ...] = ()


def kaggle_config_dir(env=os.environ, home: Path | None = None) -> Path:
    """kaggle.json's folder, as kaggle 2.x chooses it: ``$KAGGLE_CONFIG_DIR``; else ``~/.kaggle``
    when it exists; else (Linux) ``$XDG_CONFIG_HOME/kaggle``, default ``~/.config/kaggle``."""
    home = home or Path(env.get("HOME") or Path.home())
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"])
    legacy = home / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return legacy


def kaggle_credentials(env=os.environ, home: Path | None = None) -> KaggleCredentials:
    """The credentials the ``kaggle`` command (2.x: kaggle_api_extended.authenticate and
    kagglesdk's get_access_token_from_env) would use, in its order: an access token
    (``KAGGLE_API_TOKEN``, its value or a file it names, then ``~/.kaggle/access_token``); an API
    key (``username`` and ``key`` from ``kaggle.json`` in :func:`kaggle_config_dir`, each
    overridden by ``KAGGLE_USERNAME`` / ``KAGGLE_KEY``); the OAuth login ``kaggle auth login``
    keeps in ``~/.kaggle/credentials.json``.  A token is checked online by kaggle; here only found."""
    home = home or Path(env.get("HOME") or Path.home())
    notes = []

    def text(path: Path) -> str:
        try:
            return path.read_text().strip() if path.is_file() else ""
        except OSError:
            return ""

    token = env.get("KAGGLE_API_TOKEN")
    if token:
        if Path(token).exists():
            if text(Path(token)):
                return KaggleCredentials("access token", f"{token} (KAGGLE_API_TOKEN)")
            notes.append(f"KAGGLE_API_TOKEN names {token}, which is empty")
        else:
            return KaggleCredentials("access token", "KAGGLE_API_TOKEN")
    for name in ("access_token", "access_token.txt"):
        if text(home / ".kaggle" / name):
            return KaggleCredentials("access token", str(home / ".kaggle" / name))
    config = kaggle_config_dir(env, home) / "kaggle.json"
    in_file = {}
    if config.is_file():
        try:
            in_file = json.loads(config.read_text()) or {}
        except (OSError, ValueError) as exc:
            notes.append(f"{config} is not valid JSON ({exc}); kaggle ignores it")
        if in_file and os.name != "nt" and config.stat().st_mode & 0o044:
            notes.append(f"{config} is readable by other users (kaggle warns): chmod 600 {config}")
    in_env = {k[len("KAGGLE_"):].lower(): v for k, v in env.items() if k.startswith("KAGGLE_")}
    values = {**in_file, **in_env}
    if values.get("username") and values.get("key"):
        where = [str(config)] if any(in_file.get(k) and not in_env.get(k) for k in ("username", "key")) else []
        where += [f"KAGGLE_{k.upper()}" for k in ("username", "key") if in_env.get(k)]
        return KaggleCredentials("API key", " and ".join(where), tuple(notes))
    if values.get("username") or values.get("key"):
        notes.append(f"an API key needs both username and key ({config}, KAGGLE_USERNAME, KAGGLE_KEY); one is "
                     "missing")
    oauth = home / ".kaggle" / "credentials.json"
    if oauth.is_file():
        try:
            if (json.loads(oauth.read_text()) or {}).get("refresh_token"):
                return KaggleCredentials("OAuth login", str(oauth), tuple(notes))
        except (OSError, ValueError):
            pass
        notes.append(f"{oauth} holds no refresh_token: log in again with `kaggle auth login`")
    return KaggleCredentials(None, None, tuple(notes))


def where_kaggle_looks(env=os.environ, home: Path | None = None) -> str:
    home = home or Path(env.get("HOME") or Path.home())
    return (f"KAGGLE_API_TOKEN, {home / '.kaggle' / 'access_token'}, {kaggle_config_dir(env, home) / 'kaggle.json'} "
            f"or KAGGLE_USERNAME and KAGGLE_KEY, {home / '.kaggle' / 'credentials.json'} (kaggle auth login)")


def _run(cmd: list[str], env, timeout: float = 60) -> tuple[int | None, str]:
    """A command's exit status and its output (stdout and stderr), None on a timeout or OSError."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(env))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    return res.returncode, (res.stdout + res.stderr).strip()


def competition_rules(exe: str, slug: str, env=os.environ) -> Check | None:
    """Whether the account may download the competition's files: ``kaggle competitions files``
    lists them only once its rules are accepted (HTTP 403 otherwise).  None when kaggle.com
    cannot be asked (no internet here, say): a warning says so."""
    key = "rules"
    code, out = _run([exe, "competitions", "files", slug, "--page-size", "1", "--csv"], env)
    said = " ".join(out.split())[-300:]
    url = f"https://www.kaggle.com/competitions/{slug}/rules"
    if code == 0:
        return Check(key, OK, "its rules are accepted (kaggle lists its files)")
    if re.search(r"\b403\b|forbidden|rules|denied", out, re.I):
        return Check(key, FAIL, f"kaggle.com refuses its files ({said}): accept its rules at {url}")
    if re.search(r"\b401\b|unauthori[sz]ed|credentials", out, re.I):
        return Check(key, FAIL, f"kaggle.com rejects the credentials ({said}): renew them "
                                "(https://www.kaggle.com/settings/api)")
    return Check(key, WARN, f"could not ask kaggle.com whether its rules are accepted ({said or 'no answer'}); "
                            f"they must be, at {url}")


def kaggle_version(exe: str, env=os.environ) -> Version | None:
    code, out = _run([exe, "--version"], env, timeout=30)
    m = re.search(r"(\d+\.\d+(\.\d+)?)", out) if code == 0 else None
    return Version(m[1]) if m else None


def dataset_checks(cfg: dict, env=os.environ, home: Path | None = None, datasets=None,
                   ask_kaggle: bool = True) -> list[Check]:
    """The data of ``datasets`` (default: every dataset of the config): what each source needs.
    A public Kaggle dataset needs the ``kaggle`` command only (kaggle 2.x downloads it without a
    login); a competition also needs credentials and its rules accepted (asked of kaggle.com when
    ``ask_kaggle``)."""
    out = []
    results = Path(cfg["results"])
    kaggle = None  # the kaggle command, credentials and version: looked up once, when a dataset needs them
    for name in sorted(cfg["datasets"] if datasets is None else datasets):
        ds, key = cfg["datasets"][name], f"datasets.{name}"
        if ds["source"] == "synthetic":
            out.append(Check(key, OK, "synthetic stand-ins in the real layout (the demo; no real data)"))
        elif ds["source"] == "local":
            out.append(_local_check(key, ds["path"]))  # required with source 'local' (the config's cross-checks)
        elif (results / "raw" / f"{name}.sha256").is_file():
            out.append(Check(key, OK, f"downloaded already ({results / 'raw' / name}; its SHA-256 manifest is "
                                      "checked on every run)"))
        elif ds["download"]["kind"] == "urls":
            files = ds["download"]["files"]
            hosts = sorted({re.sub(r"^\w+://([^/]+).*$", r"\1", f["url"]) for f in files})
            out.append(Check(key, OK, f"{len(files)} file(s) from {', '.join(hosts)} "
                                      "(needs internet on the submitting node)"))
        else:
            if kaggle is None:
                from .download import kaggle_command

                exe = kaggle_command(env.get("PATH") if env is not os.environ else None)
                kaggle = (exe, kaggle_credentials(env, home), kaggle_version(exe, env) if exe else None)
            out.append(_kaggle_check(key, ds["download"], kaggle, env, home, ask_kaggle))
    return out


def _local_check(key: str, path: str) -> Check:
    if not Path(path).is_dir():
        return Check(key, FAIL, f"{key}.path: {path} is not a folder")
    if not any(Path(path).iterdir()):
        return Check(key, FAIL, f"{key}.path: {path} is empty")
    return Check(key, OK, f"local data in {path}")


def _kaggle_check(key: str, dl: dict, kaggle: tuple, env, home, ask_kaggle: bool) -> Check:
    """A Kaggle download's needs (``kaggle``: the command, the credentials it finds, its version):
    the command, credentials where it needs them, a competition's rules."""
    exe, creds, version = kaggle
    competition = dl["kind"] == "kaggle_competition"
    what = f"Kaggle {'competition' if competition else 'dataset'} {dl['slug']}"
    if exe is None:
        return Check(key, FAIL, f"{what}: the 'kaggle' command is not installed (pip install -e \".[download]\")")
    old = version is not None and version.major < 2
    if creds.how is None and (competition or old):
        why = ("a competition's files need a Kaggle login" if competition else
               f"kaggle {version} needs a login for every download (2.x does not for public datasets)")
        return Check(key, FAIL, f"{what}: {why}; kaggle finds no credentials in {where_kaggle_looks(env, home)}"
                                " (https://www.kaggle.com/docs/api)" + "".join(f"; {n}" for n in creds.notes))
    login = (f"with the {creds.how} from {creds.where}" if creds.how else
             "without a login (a public dataset; kaggle 2.x needs none)")
    notes = "".join(f"; note: {n}" for n in creds.notes)
    if not competition:
        return Check(key, OK, f"{what} {login}{notes}")
    rules = competition_rules(exe, dl["slug"], env) if ask_kaggle else None
    if rules is None:
        return Check(key, OK, f"{what} {login} (its rules must be accepted on kaggle.com){notes}")
    return Check(key, rules.status, f"{what} {login}: {rules.message}{notes}")


def dicom_check(cfg: dict, datasets, sample: int = 200) -> list[Check]:
    """The DICOM decoders the data needs: the transfer syntaxes of up to ``sample`` DICOM files
    of each dataset already on disk (a local folder or a finished download), against what the
    installed plugins decode.  JPEG Lossless and 12-bit JPEG Extended need pylibjpeg-libjpeg
    (GPL-3.0: the optional ``jpeg-lossless`` extra); RSNA's JPEG Baseline files decode with Pillow."""
    import pydicom

    from .dicom import decoder_hint

    out = []
    for name in sorted(datasets):
        ds = cfg["datasets"][name]
        root = Path(ds["path"]) if ds["source"] == "local" else Path(cfg["results"]) / "raw" / name
        if ds["source"] == "synthetic" or not root.is_dir():
            continue
        syntaxes: dict[tuple[str, int], str] = {}  # (transfer syntax, bits stored) -> an example file
        for i, f in enumerate(root.rglob("*.dcm")):
            if i >= sample:
                break
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
                uid = str(ds.file_meta.get("TransferSyntaxUID", ""))
                syntaxes.setdefault((uid, int(ds.get("BitsStored", 8) or 8)), str(f))
            except Exception:  # noqa: BLE001 - the converter reports unreadable files one by one
                continue
        missing = [f"{pydicom.uid.UID(uid).name} (e.g. {example}): {decoder_hint(uid, bits)}"
                   for (uid, bits), example in sorted(syntaxes.items()) if decoder_hint(uid, bits)]
        if missing:
            out.append(Check(f"dicom.{name}", FAIL, f"{len(missing)} transfer syntax(es) of its files no installed "
                             "plugin decodes: " + "; ".join(missing)))
        elif syntaxes:
            names = ", ".join(sorted({pydicom.uid.UID(u).name for u, _ in syntaxes}))
            out.append(Check(f"dicom.{name}", OK, f"the sampled DICOMs ({names}) decode with the installed plugins"))
    return out


def weights_checks(cfg: dict, names=None) -> list[Check]:
    """Each ``weights:`` entry among ``names`` (default: all): a download, a local file or none."""
    out = []
    for name, w in sorted(cfg["weights"].items()):
        if names is not None and name not in names:
            continue
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


def driver_version(nvidia_smi_output: str) -> str | None:
    m = re.search(r"Driver Version:\s*([0-9.]+)", nvidia_smi_output)
    return m[1] if m else None


# The oldest Linux driver that runs every toolkit of a CUDA major version ("minor version
# compatibility"; NVIDIA's CUDA Compatibility guide and the CUDA Toolkit release notes, table 3)
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


def cuda_compatibility(built: str, nvidia_smi_output: str) -> Check:
    """Whether a torch built for CUDA ``built`` runs on the driver ``nvidia-smi`` describes, by
    NVIDIA's rules: a driver runs every CUDA of its own major version or older (minor version
    compatibility: a 12.4 driver runs a 12.6 build; PTX compiled for a newer minor would not
    JIT, and torch's wheels ship compiled kernels), never a newer major."""
    drv, version = driver_cuda(nvidia_smi_output), driver_version(nvidia_smi_output)
    if drv is None:
        return Check("gpu.driver", WARN, "nvidia-smi printed no 'CUDA Version': the driver cannot be judged")
    b_major, b_minor = _version(built)
    d_major, d_minor = _version(drv)
    have = f"the driver{f' {version}' if version else ''} supports CUDA {drv}; torch is built for CUDA {built}"
    if d_major < b_major:
        need = f" (driver {MIN_DRIVER[b_major]} or newer)" if b_major in MIN_DRIVER else ""
        return Check("gpu.driver", FAIL, f"{have}: a CUDA {b_major} build needs a CUDA {b_major} driver{need}; "
                     "install the torch build for the driver's CUDA (README, 'GPU nodes')")
    if version and b_major in MIN_DRIVER and Version(version) < Version(MIN_DRIVER[b_major]):
        return Check("gpu.driver", FAIL, f"{have}: CUDA {b_major} needs driver {MIN_DRIVER[b_major]} or newer")
    if d_major == b_major and d_minor < b_minor:
        return Check("gpu.driver", OK, f"{have}: runs by CUDA's minor version compatibility")
    return Check("gpu.driver", OK, have)


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:2])


def gpu_checks(cfg: dict, on_gpu_node: bool = False, env=os.environ, runs: dict | None = None) -> list[Check]:
    """Whether the runs that ask for GPUs (``train.gpus``; default: every run of the config) will
    find them with this torch.  On a login node without GPUs a missing device is a warning (the
    jobs run elsewhere); with ``on_gpu_node`` it is a failure."""
    import torch

    from .accel import cuda_diagnosis

    if runs is None:
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
        code, text = _run([smi], env)
        if code is None:
            out.append(Check("gpu.driver", WARN, f"nvidia-smi did not answer: {text}"))
        else:
            out.append(cuda_compatibility(built, text))
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        out.append(Check("gpu.devices", OK, f"{who}; torch sees {len(names)}: {', '.join(names)}"))
    else:
        status = FAIL if on_gpu_node else WARN
        where = ("" if on_gpu_node else " (expected on a login node: run `srun --gpus=1 medrepro doctor "
                 "--gpu-node ...` to check a GPU node)")
        out.append(Check("gpu.devices", status, f"{who} but torch sees no GPU here{where}: {cuda_diagnosis()}"))
    return out


def detectron2_check(cfg: dict, runs: dict | None = None) -> list[Check]:
    runs = cfg.get("experiments", {}) if runs is None else runs
    using = sorted(n for n, e in runs.items()
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
def run_checks(config_dir: str | Path = "config", overlays=(), *, profile: str | Path | None = None,
               on_gpu_node: bool = False, constraints: str | Path | None = None,
               env=os.environ, home: Path | None = None, targets=(), ask_kaggle: bool = True) -> list[Check]:
    """Every check, in order; a config that does not validate stops the checks that read it.

    ``targets`` are snakemake's: paper names check only what those papers read (their datasets,
    weights and runs, :func:`medrepro.plan.needs`); none, or ``all``, checks everything."""
    from .config import ConfigError, load_config
    from .plan import needs

    checks = [python_check(), packages_check(constraints)]
    if not (Path(config_dir) / "config.yaml").is_file():
        return checks + [Check("config", FAIL, f"{Path(config_dir) / 'config.yaml'} not found: run medrepro in the "
                                               "workflow's folder (the one holding config/), or give --config-dir")]
    try:
        cfg = load_config(config_dir, overlays)
    except (ConfigError, OSError, yaml.YAMLError) as exc:
        return checks + [Check("config", FAIL, str(exc))]
    papers = [t for t in targets if t in cfg["papers"]]
    others = [t for t in targets if t not in cfg["papers"] and t != "all"]
    want = needs(cfg, papers if papers and not others and "all" not in targets else None)
    checks.append(Check("config", OK, f"valid ({cfg['scale']} scale, paper settings {cfg['paper_settings']}; "
                                      f"papers {', '.join(sorted(cfg['papers']))})"))
    if others:
        checks.append(Check("targets", WARN, f"{', '.join(others)}: not a paper of this config "
                                             f"({', '.join(cfg['papers'])}); checking what every paper needs"))
    elif papers and "all" not in targets:
        checks.append(Check("targets", OK, f"{', '.join(papers)}: datasets {', '.join(sorted(want.datasets))}; "
                                           f"{len(want.runs)} run(s)"))
    checks += dataset_checks(cfg, env, home, want.datasets, ask_kaggle) + dicom_check(cfg, want.datasets)
    checks += weights_checks(cfg, want.weights if len(want.papers) < len(cfg["papers"]) else None)
    checks += gpu_checks(cfg, on_gpu_node, env, want.runs) + detectron2_check(cfg, want.runs)
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
