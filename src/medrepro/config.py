"""Load the workflow configuration and validate it against ``config/schema.yaml``.

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

from .backbones import resolve_normalize, weights_kind
from .specs import model_spec, study_spec


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
        problems = _cross_checks(cfg)
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
        run = _without_none(study_run_spec(study, at["backbone"], at.get("batch_size"), at.get("lr")))
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


def _cross_checks(cfg: dict) -> list[str]:
    """Checks a JSON schema cannot express: names that must refer to each other."""
    out = []
    datasets = cfg.get("datasets", {})
    for name, d in datasets.items():
        if d.get("source") == "local" and not d.get("path"):
            out.append(f"datasets.{name}.path: required when source is 'local' (the folder holding the raw data)")
        if d.get("source") == "download" and not d.get("download"):
            out.append(f"datasets.{name}.download: required when source is 'download'")
    for name in cfg.get("repeats", {}).get("experiments", []):
        if name not in cfg.get("experiments", {}):
            out.append(f"repeats.experiments: {name!r} is not an experiment of this config (staged studies are not "
                       f"repeated); expected one of {sorted(cfg.get('experiments', {}))}")
    inflation = cfg.get("inflation", {})
    for name in inflation.get("experiments", []):
        e = cfg.get("experiments", {}).get(name)
        if e is None:
            out.append(f"inflation.experiments: {name!r} is not an experiment of this config; expected one of "
                       f"{sorted(cfg.get('experiments', {}))}")
        elif e["task"] != "classify":
            out.append(f"inflation.experiments: {name!r} is a {e['task']} experiment; the pairs are classifiers")
    for name, at in inflation.get("studies", {}).items():
        study = cfg.get("studies", {}).get(name)
        if study is None:
            out.append(f"inflation.studies: {name!r} is not a study of this config; expected one of "
                       f"{sorted(cfg.get('studies', {}))}")
        elif at["backbone"] not in study["backbones"]:
            out.append(f"inflation.studies.{name}.backbone: {at['backbone']!r} is not one of the study's backbones "
                       f"{sorted(study['backbones'])}")
    for name, e in cfg.get("experiments", {}).items():
        if e["dataset"] not in datasets:
            out.append(f"experiments.{name}.dataset: {e['dataset']!r} is not a dataset of this config; "
                       f"expected one of {sorted(datasets)}")
        if e["paper"] not in cfg.get("papers", {}):
            out.append(f"experiments.{name}.paper: {e['paper']!r} is not under papers; expected one of "
                       f"{sorted(cfg.get('papers', {}))}")
        n_cls = len(e["classes"])
        names = [c["name"] for c in e["classes"]]
        for cls in (e.get("subset") or {}).get("per_class", {}):
            if cls not in names:
                out.append(f"experiments.{name}.subset.per_class: {cls!r} is not a class of the experiment; "
                           f"expected one of {names}")
        for split_name, per in (e["split"].get("counts") or {}).items():
            for cls in per:
                if cls not in names:
                    out.append(f"experiments.{name}.split.counts.{split_name}: {cls!r} is not a class of the "
                               f"experiment; expected one of {names}")
        if (e["task"] == "detect") != (e["model"]["arch"] == "maskrcnn"):
            out.append(f"experiments.{name}.model.arch: {e['model']['arch']!r} with task {e['task']!r}; "
                       "task 'detect' goes with arch 'maskrcnn' and only with it")
            continue
        if e["task"] == "detect" and e["train"]["gpus"] > 1:
            out.append(f"experiments.{name}.train.gpus: {e['train']['gpus']}; Mask R-CNN trains on one GPU here "
                       "(data-parallel training is for classifier experiments); set 1")
        if e["task"] == "detect":
            missing = [k for k, v in (("detect", e.get("detect")), ("model.detector", e["model"].get("detector")))
                       if v is None]
            if missing:
                out += [f"experiments.{name}.{k}: required for task 'detect' ({{}} takes every default)"
                        for k in missing]
                continue
            d = e["detect"]
            for cls in d.get("train_classes", []) + [d["positive_class"]]:
                if cls not in names:
                    out.append(f"experiments.{name}.detect: class {cls!r} is not a class of the experiment; "
                               f"expected one of {names}")
            if not e["train"].get("steps_per_epoch"):
                out.append(f"experiments.{name}.train.steps_per_epoch: required for task 'detect'")
            if e["model"]["input_size"][0] != e["model"]["input_size"][1]:
                out.append(f"experiments.{name}.model.input_size: {e['model']['input_size']}; Mask R-CNN here "
                           "takes square inputs")
            continue
        key = "head" if e["model"]["arch"] == "transfer" else "layers"
        if not e["model"].get(key):
            out.append(f"experiments.{name}.model.{key}: required for arch {e['model']['arch']!r}")
            continue
        if e["model"]["arch"] == "transfer" and not e["model"].get("backbone"):
            out.append(f"experiments.{name}.model.backbone: required for arch 'transfer'")
        units = e["model"][key][-1].get("units")
        want = 1 if e["model"]["output"] == "sigmoid" else n_cls
        if e["model"]["output"] == "sigmoid" and n_cls != 2:
            out.append(f"experiments.{name}.model.output: 'sigmoid' needs exactly 2 classes, found {n_cls}")
        elif units is not None and units != want:
            out.append(f"experiments.{name}.model.{key}[-1].units: {units}, but output "
                       f"{e['model']['output']!r} with {n_cls} classes needs {want}")
        out += _fraction_problems(f"experiments.{name}", e["split"]["fractions"])
        if e["train"]["validate_on"] not in _made_splits(e["split"]):
            out.append(f"experiments.{name}.train.validate_on: {e['train']['validate_on']!r} is not a split "
                       "this experiment makes (see split.keep_source, split.counts and split.fractions)")
    for name, st in cfg.get("studies", {}).items():
        if st["dataset"] not in datasets:
            out.append(f"studies.{name}.dataset: {st['dataset']!r} is not a dataset of this config; "
                       f"expected one of {sorted(datasets)}")
        if st["paper"] not in cfg.get("papers", {}):
            out.append(f"studies.{name}.paper: {st['paper']!r} is not under papers")
        if name in cfg.get("experiments", {}):
            out.append(f"studies.{name}: also the name of an experiment; give it another")
        if st["train"]["gpus"] > 1:
            out.append(f"studies.{name}.train.gpus: {st['train']['gpus']}; the study stages train on one GPU "
                       "(their heads are small; data-parallel training is for classifier experiments); set 1")
        n_cls = len(st["classes"])
        want = 1 if st["model"]["output"] == "sigmoid" else n_cls
        for b, spec in st["backbones"].items():
            units = spec["head"][-1].get("units")
            if units != want:
                out.append(f"studies.{name}.backbones.{b}.head[-1].units: {units}, but output "
                           f"{st['model']['output']!r} with {n_cls} classes needs {want}")
        out += _fraction_problems(f"studies.{name}", st["split"]["fractions"])
        if st["fine_tune"]["count_layers"] == "keras":
            from .keras_layers import APPLICATIONS, TORCHVISION_MAPPED

            for b in st["backbones"]:
                keras_net = weights_kind(cfg["weights"].get(b)) == "keras"
                if b not in APPLICATIONS or not (keras_net or b in TORCHVISION_MAPPED):
                    out.append(f"studies.{name}.fine_tune.count_layers: 'keras', but there is no Keras layer list "
                               f"for the torchvision network of backbone {b!r} (have {sorted(TORCHVISION_MAPPED)}; "
                               f"with weights.{b}: keras also {sorted(set(APPLICATIONS) - TORCHVISION_MAPPED)}); "
                               "set 'torch' to count its torch modules")
        if st["train"]["validate_on"] not in _made_splits(st["split"]):
            out.append(f"studies.{name}.train.validate_on: {st['train']['validate_on']!r} is not a split "
                       "this study makes")
    for name, p in cfg.get("papers", {}).items():
        for i, d in enumerate(p.get("departures", [])):
            if d.get("setting") and _MISSING is _get(cfg, d["setting"]):
                out.append(f"papers.{name}.departures[{i}].setting: {d['setting']!r} is not a key of this config")
        for ex in p.get("experiments", []):
            if ex not in cfg.get("experiments", {}) and ex not in cfg.get("studies", {}):
                out.append(f"papers.{name}.experiments: {ex!r} is neither an experiment nor a study of this config")
        for i, o in enumerate(p.get("outputs", []) + p.get("compare", [])):
            ex = o.get("experiment")
            if ex is not None and ex not in p.get("experiments", []):
                out.append(f"papers.{name}: output/compare {o.get('name', o.get('metric'))!r} names experiment "
                           f"{ex!r}, which is not in papers.{name}.experiments")
    return out


_MISSING = object()


def _made_splits(split: dict) -> set[str]:
    return set(split["keep_source"]) | set(split.get("counts") or {}) | set(split["fractions"])


def _get(cfg: dict, dotted: str):
    cur = cfg
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def resolved_departures(cfg: dict, paper: str) -> list[dict]:
    """A paper's ``departures`` with the value each ``setting`` has in this config and whether
    it is the paper's (``follows``): the report shows which of them this run makes."""
    out = []
    for d in cfg["papers"][paper].get("departures", []):
        d = dict(d)
        if d.get("setting"):
            d["value"] = _get(cfg, d["setting"])
            d["follows"] = "paper_value" in d and d["value"] == d["paper_value"]
        out.append(d)
    return out


def unnamed_departures(cfg: dict) -> list[str]:
    """Settings a paper states (``papers.<paper>.stated``) that this config sets otherwise without a
    departure naming the key: each as a sentence (empty when every departure is declared)."""
    out = []
    for paper, block in cfg["papers"].items():
        named = {d.get("setting") for d in block.get("departures", [])}
        for st in block.get("stated", []):
            have = _get(cfg, st["setting"])
            if have is _MISSING:
                out.append(f"papers.{paper}.stated: {st['setting']} is not a key of this config")
            elif have != st["value"] and st["setting"] not in named:
                out.append(f"papers.{paper}: {st['setting']} is {have!r} here, the paper states {st['value']!r} "
                           f"({st['source']}), and no departure names it")
    return out


def _fraction_problems(where: str, fractions: dict) -> list[str]:
    from .splits import fold_counts

    if not fractions:
        return []
    try:
        fold_counts(fractions)
    except ValueError as exc:
        return [f"{where}.split.fractions: {exc}"]
    return []


def merge(base: dict, overlay: dict) -> dict:
    """Lay ``overlay`` over ``base`` key by key, as Snakemake merges ``--configfile``s (lists replace)."""
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def scale_note(scale: str) -> str:
    """The line every table and figure carries about the config's ``scale``."""
    return ("demo scale: synthetic stand-in data, reduced sizes and epochs; not the paper's data"
            if scale == "demo" else "full scale: the paper's settings")


def paper_files(config_dir: str | Path, cfg: Mapping) -> list[Path]:
    """The files of the paper folders under ``config_dir/papers`` (one folder a paper, in name
    order), as they are laid over ``config.yaml``: every folder's ``runs.yaml`` (its runs at demo
    scale and its ``papers`` block), then, where ``cfg`` (the config so far, not yet validated)
    says ``paper_settings: full``, every folder's ``full.yaml`` (the paper's own settings)."""
    folders = sorted(p for p in (Path(config_dir) / "papers").iterdir() if (p / "runs.yaml").is_file())
    files = [f / "runs.yaml" for f in folders]
    settings = cfg.get("paper_settings", "demo")  # not validated yet: the schema's default
    if settings not in ("demo", "full"):
        raise ConfigError(f"paper_settings: {settings!r}; expected 'demo' or 'full'")
    if settings == "full":
        files += [f / "full.yaml" for f in folders if (f / "full.yaml").is_file()]
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


def uses_feature_cache(experiment: dict) -> bool:
    """A frozen backbone seeing unaugmented images gives the same features every epoch:
    compute them once per backbone, dataset and input size (rule ``features``) and train
    the head on them."""
    return (model_spec(experiment["model"]).frozen_transfer and not experiment["augment"]
            and experiment["train"]["feature_cache"] == "auto")


def feature_key(experiment: dict, weights: dict | None = None) -> str:
    """The name of an experiment's features file: what the features depend on (``weights``: the
    config's ``weights`` block; Keras' weights mean Keras' network, marked ``_keras``)."""
    m = experiment["model"]
    h, w = m["input_size"]
    pool = "_flat" if m["pool"] == "flatten" else ""
    kind = weights_kind((weights or {}).get(m["backbone"]))
    norm = resolve_normalize(m["backbone"], m["normalize"], kind)
    impl = "_keras" if kind == "keras" else ""
    return f"{m['backbone']}{impl}_{h}x{w}_c{m['channels']}_{norm}{pool}"


def study_run_spec(study: dict, backbone: str, batch_size: int | None = None, lr: float | None = None,
                   augment: bool = False) -> dict:
    """The experiment-shaped description (plain data) of one run of a study: what
    :meth:`medrepro.specs.StudySpec.run` makes of it."""
    return study_spec(study).run(backbone, batch_size, lr, augment).as_dict()


def study_features(study: dict, weights: dict | None = None) -> dict[str, tuple[str, dict]]:
    """backbone -> (features file key, model spec) of a study's stage-1 candidates."""
    return {b: (feature_key(study_run_spec(study, b), weights), study_run_spec(study, b)["model"])
            for b in study["backbones"]}
