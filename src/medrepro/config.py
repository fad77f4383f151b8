"""Load the workflow configuration (``config.yaml``, the paper folders, ``--configfile``
overlays), validate it against ``config/schema.yaml`` and the cross-checks of
:mod:`medrepro.config_checks`, and expand its runs (seed repeats, leakage-inflation arms).

Errors are reported all at once, each with the key path, the offending value
and what was expected, e.g.::

    config error: 3 problem(s) in config/config.yaml
      - datasets.kermany.synthetic.difficulty: 1.5 is above the maximum 1 (how hard ...)
      - experiments.cnn_kermany.split.overlap: 'maybe' is not one of ['error', 'drop', 'report']
      - experiments.cnn_kermany.dataset: 'kermani' is not a dataset of this config; expected one of [...]
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping

import jsonschema
import yaml

from .config_checks import cross_checks
from .specs import study_spec


class ConfigError(ValueError):
    pass


def _path(err) -> str:
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in err.absolute_path]
    return ".".join(parts).replace(".[", "[") or "(top level)"


def _describe(err) -> str:
    v = err.instance
    shown = repr(v) if not isinstance(v, (dict, list)) else type(v).__name__
    s = err.schema if isinstance(err.schema, dict) else {}
    v_ = err.validator
    if v_ == "required":
        msg = err.message.replace("is a required property", "is required but missing")
    elif v_ == "type":
        msg = f"{shown} is not of type {err.validator_value}"
    elif v_ == "enum":
        msg = f"{shown} is not one of {err.validator_value}"
    elif v_ == "minimum":
        msg = f"{shown} is below the minimum {err.validator_value}"
    elif v_ == "maximum":
        msg = f"{shown} is above the maximum {err.validator_value}"
    elif v_ == "additionalProperties":
        allowed = sorted(s.get("properties", {}))
        msg = f"{err.message.split('(')[-1].rstrip(')')}; allowed keys: {allowed}"
    else:
        msg = err.message
    desc = s.get("description")
    return f"{msg}" + (f" ({desc})" if desc and v_ != "additionalProperties" else "")


def _resolve(sub: dict, root: dict) -> dict:
    while isinstance(sub, dict) and "$ref" in sub:
        target = root
        for part in sub["$ref"].lstrip("#/").split("/"):
            target = target[part]
        sub = {**target, **{k: v for k, v in sub.items() if k != "$ref"}}
    return sub


def _fill_defaults(schema: dict, inst, root: dict | None = None):
    """Insert schema defaults into ``inst`` (objects only, recursively, following $ref)."""
    root = root or schema
    schema = _resolve(schema, root)
    if not isinstance(inst, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve(sub, root)
        if key not in inst and "default" in sub:
            inst[key] = copy.deepcopy(sub["default"])
        if key in inst:
            _fill_defaults(sub, inst[key], root)
    addl = schema.get("additionalProperties")
    if isinstance(addl, dict):
        for key, val in inst.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(addl, val, root)


def schema_defaults(schema_path: str | Path, definition: str, **over) -> dict:
    """A block of the schema's ``$defs.<definition>`` (``train_spec``, say) holding every default
    the schema gives, with ``over`` laid over it: the settings of a run built outside a config
    (tests, benchmarks) come from the one place defaults live."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    block: dict = {}
    _fill_defaults(schema["$defs"][definition], block, schema)
    return {**block, **over}


def validate_config(config: dict, schema_path: str | Path, source: str = "config") -> dict:
    """Validate ``config`` (a copy with defaults filled in is returned) or raise :class:`ConfigError`."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    cfg = copy.deepcopy(config)
    _fill_defaults(schema, cfg)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"{_path(e)}: {_describe(e)}" for e in errors]
    if not problems:
        problems = cross_checks(cfg)
    if problems:
        raise ConfigError(f"config error: {len(problems)} problem(s) in {source}\n  - " + "\n  - ".join(problems))
    for run in [*cfg.get("experiments", {}).values(), *cfg.get("studies", {}).values()]:
        run["train"]["allow_cpu"] = run["train"]["allow_cpu"] or cfg["allow_cpu"]  # read where the device is chosen
    cfg["experiments"] = with_repeats(cfg["experiments"], cfg["repeats"])
    cfg["experiments"] = with_inflation(cfg["experiments"], cfg.get("studies", {}), cfg["inflation"])
    return cfg


REPEAT = "__seed"


def with_repeats(experiments: dict, repeats: dict) -> dict:
    """``experiments`` plus, for each of ``repeats['experiments']``, ``repeats['seeds']`` copies
    named ``<name>__seed<k>`` whose training seed is the original's + k (same split, same test
    images: only initialisation and batch order change)."""
    out = dict(experiments)
    for name in repeats.get("experiments", []):
        for k in range(1, repeats.get("seeds", 0) + 1):
            e = copy.deepcopy(experiments[name])
            e["train"]["seed"] = e["train"]["seed"] + k
            out[f"{name}{REPEAT}{k}"] = e
    return out


INFLATION = "__by_"


def with_inflation(experiments: dict, studies: dict, inflation: dict) -> dict:
    """``experiments`` plus, for each experiment of ``inflation['experiments']`` and each study of
    ``inflation['studies']`` (at the backbone, batch size and learning rate given there), two runs
    ``<name>__by_image`` and ``<name>__by_patient``: the same model, training seed and budget on
    the two arms of :func:`medrepro.splits.paired_split` (one image-level split, with and without
    the test patients' other images in train and val; the same test images)."""
    out = dict(experiments)
    bases = {name: experiments[name] for name in inflation.get("experiments", [])}
    for name, at in inflation.get("studies", {}).items():
        study = studies[name]
        run = _without_none(study_spec(study).run(at["backbone"], at.get("batch_size"), at.get("lr")).as_dict())
        run["train"]["allow_cpu"] = study["train"]["allow_cpu"]
        bases[name] = {**run, "paper": study["paper"], "split": copy.deepcopy(study["split"]), "subset": None}
    for name, base in bases.items():
        for arm in ("image", "patient"):
            e = copy.deepcopy(base)
            e["split"] = {**e["split"], "arm": arm}
            e["inflation_of"] = name
            out[f"{name}{INFLATION}{arm}"] = e
    return out


def _without_none(obj):
    """``obj`` without the keys whose value is None (a spec's unset options), so that the block
    validates as one written by hand."""
    if isinstance(obj, dict):
        return {k: _without_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_without_none(v) for v in obj]
    return obj


def inflation_pairs(experiments: dict) -> dict[str, dict[str, str]]:
    """Experiment or study -> ``{"image": run, "patient": run}`` of its inflation pair."""
    out: dict[str, dict[str, str]] = {}
    for run, e in experiments.items():
        if e.get("inflation_of"):
            out.setdefault(e["inflation_of"], {})[e["split"]["arm"]] = run
    return out


def repeats_of(experiments: dict, name: str) -> list[str]:
    """The seed repeats of experiment ``name`` (:func:`with_repeats`), in order."""
    return sorted((e for e in experiments if e.startswith(name + REPEAT)), key=lambda e: int(e.rsplit(REPEAT, 1)[1]))


def merge(base: dict, overlay: dict) -> dict:
    """Lay ``overlay`` over ``base`` key by key, as Snakemake merges ``--configfile``s (lists replace)."""
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


RUN_SIZES = (None, "smoke", "tiny")


def paper_files(config_dir: str | Path, cfg: Mapping) -> list[Path]:
    """The files of the paper folders under ``config_dir/papers`` (one folder a paper, in name
    order), as they are laid over ``config.yaml``: every folder's ``runs.yaml`` (its runs at demo
    scale and its ``papers`` block), then, where ``cfg`` (the config so far, not yet validated)
    says ``paper_settings: full``, every folder's ``full.yaml`` (the paper's own settings), then,
    where it says ``run_sizes: smoke`` or ``tiny``, every folder's ``smoke.yaml`` or ``tiny.yaml``
    (a quick run's counts, epochs and iterations). A folder without one of these files keeps its
    runs as they are there."""
    folders = sorted(p for p in (Path(config_dir) / "papers").iterdir() if (p / "runs.yaml").is_file())
    files = [f / "runs.yaml" for f in folders]
    settings, sizes = cfg.get("paper_settings", "demo"), cfg.get("run_sizes")  # not validated yet: the defaults
    if settings not in ("demo", "full"):
        raise ConfigError(f"paper_settings: {settings!r}; expected 'demo' or 'full'")
    if sizes not in RUN_SIZES:
        raise ConfigError(f"run_sizes: {sizes!r}; expected one of {list(RUN_SIZES)}")
    for overlay in ("full" if settings == "full" else None, sizes):
        if overlay:
            files += [f / f"{overlay}.yaml" for f in folders if (f / f"{overlay}.yaml").is_file()]
    return files


def _read(path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def compose_config(config_dir: str | Path, overlays=()) -> dict:
    """The workflow's config as the Snakefile composes it, not yet validated: ``config.yaml``, then
    each paper folder's files (:func:`paper_files`, for the ``paper_settings`` in force), with
    ``overlays`` (the ``--configfile`` files, in order) laid over every step, as Snakemake lays its
    command-line config over each config file it loads."""
    config_dir = Path(config_dir)
    cli: dict = {}
    for p in overlays:
        cli = merge(cli, _read(p))
    cfg = merge(_read(config_dir / "config.yaml"), cli)
    for f in paper_files(config_dir, cfg):
        cfg = merge(merge(cfg, _read(f)), cli)
    return cfg


def load_config(config_dir: str | Path, overlays=(), schema_path: str | Path | None = None) -> dict:
    """:func:`compose_config`, validated against ``schema_path`` (default: the folder's schema.yaml)."""
    source = " + ".join([str(Path(config_dir) / "config.yaml"), "papers/*", *map(str, overlays)])
    return validate_config(compose_config(config_dir, overlays), schema_path or Path(config_dir) / "schema.yaml",
                           source=source)
