"""Checks of a config that its JSON schema cannot express: names that must refer to each other
(a run's dataset and paper, the classes a subset or a split names, the papers' runs), and settings
that only make sense together (a detector's task and architecture, a head's output units and the
classes). Each problem is one sentence naming the key, the value and what was expected;
:func:`medrepro.config.validate_config` reports them all at once."""
from __future__ import annotations

from .backbones import weights_kind
from .departures import MISSING, lookup


def cross_checks(cfg: dict) -> list[str]:
    """Every problem of a config (defaults filled in, valid against the schema)."""
    out = _dataset_checks(cfg) + _repeat_checks(cfg) + _inflation_checks(cfg)
    for name, e in cfg.get("experiments", {}).items():
        out += _experiment_checks(cfg, name, e)
    for name, st in cfg.get("studies", {}).items():
        out += _study_checks(cfg, name, st)
    for name, p in cfg.get("papers", {}).items():
        out += _paper_checks(cfg, name, p)
    return out


def _dataset_checks(cfg: dict) -> list[str]:
    out = []
    for name, d in cfg.get("datasets", {}).items():
        if d.get("source") == "local" and not d.get("path"):
            out.append(f"datasets.{name}.path: required when source is 'local' (the folder holding the raw data)")
        if d.get("source") == "download" and not d.get("download"):
            out.append(f"datasets.{name}.download: required when source is 'download'")
    return out


def _repeat_checks(cfg: dict) -> list[str]:
    experiments = cfg.get("experiments", {})
    return [f"repeats.experiments: {name!r} is not an experiment of this config (staged studies are not "
            f"repeated); expected one of {sorted(experiments)}"
            for name in cfg.get("repeats", {}).get("experiments", []) if name not in experiments]


def _inflation_checks(cfg: dict) -> list[str]:
    out = []
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
    return out


def _run_references(cfg: dict, where: str, run: dict) -> list[str]:
    """A run's dataset and paper are the config's."""
    out = []
    datasets, papers = cfg.get("datasets", {}), cfg.get("papers", {})
    if run["dataset"] not in datasets:
        out.append(f"{where}.dataset: {run['dataset']!r} is not a dataset of this config; "
                   f"expected one of {sorted(datasets)}")
    if run["paper"] not in papers:
        out.append(f"{where}.paper: {run['paper']!r} is not under papers; expected one of {sorted(papers)}")
    return out


def _class_references(where: str, e: dict) -> list[str]:
    """The classes an experiment's subset and split counts name are its classes."""
    names = [c["name"] for c in e["classes"]]
    out = [f"{where}.subset.per_class: {cls!r} is not a class of the experiment; expected one of {names}"
           for cls in (e.get("subset") or {}).get("per_class", {}) if cls not in names]
    for split_name, per in (e["split"].get("counts") or {}).items():
        out += [f"{where}.split.counts.{split_name}: {cls!r} is not a class of the experiment; "
                f"expected one of {names}" for cls in per if cls not in names]
    return out


def _experiment_checks(cfg: dict, name: str, e: dict) -> list[str]:
    where = f"experiments.{name}"
    out = _run_references(cfg, where, e) + _class_references(where, e)
    if (e["task"] == "detect") != (e["model"]["arch"] == "maskrcnn"):
        return out + [f"{where}.model.arch: {e['model']['arch']!r} with task {e['task']!r}; "
                      "task 'detect' goes with arch 'maskrcnn' and only with it"]
    return out + (_detector_checks(where, e) if e["task"] == "detect" else _classifier_checks(where, e))


def _detector_checks(where: str, e: dict) -> list[str]:
    out = []
    if e["train"]["gpus"] > 1:
        out.append(f"{where}.train.gpus: {e['train']['gpus']}; Mask R-CNN trains on one GPU here "
                   "(data-parallel training is for classifier experiments); set 1")
    missing = [k for k, v in (("detect", e.get("detect")), ("model.detector", e["model"].get("detector")))
               if v is None]
    if missing:
        return out + [f"{where}.{k}: required for task 'detect' ({{}} takes every default)" for k in missing]
    names = [c["name"] for c in e["classes"]]
    d = e["detect"]
    out += [f"{where}.detect: class {cls!r} is not a class of the experiment; expected one of {names}"
            for cls in d.get("train_classes", []) + [d["positive_class"]] if cls not in names]
    if not e["train"].get("steps_per_epoch"):
        out.append(f"{where}.train.steps_per_epoch: required for task 'detect'")
    det = e["model"]["detector"]
    if len(det["anchor_sizes"]) != det["last_stage"]:
        out.append(f"{where}.model.detector.anchor_sizes: {len(det['anchor_sizes'])} sizes, but a pyramid on C2-C"
                   f"{det['last_stage']} (last_stage) has {det['last_stage']} levels (one per stage and the "
                   "max-pooled one above); give one size per level")
    if e["model"]["input_size"][0] != e["model"]["input_size"][1]:
        out.append(f"{where}.model.input_size: {e['model']['input_size']}; Mask R-CNN here takes square inputs")
    return out


def _classifier_checks(where: str, e: dict) -> list[str]:
    m = e["model"]
    key = "head" if m["arch"] == "transfer" else "layers"
    if not m.get(key):
        return [f"{where}.model.{key}: required for arch {m['arch']!r}"]
    out = []
    if m["arch"] == "transfer" and not m.get("backbone"):
        out.append(f"{where}.model.backbone: required for arch 'transfer'")
    n_cls = len(e["classes"])
    units, want = m[key][-1].get("units"), 1 if m["output"] == "sigmoid" else n_cls
    if m["output"] == "sigmoid" and n_cls != 2:
        out.append(f"{where}.model.output: 'sigmoid' needs exactly 2 classes, found {n_cls}")
    elif units is not None and units != want:
        out.append(f"{where}.model.{key}[-1].units: {units}, but output {m['output']!r} with {n_cls} classes "
                   f"needs {want}")
    out += fraction_problems(where, e["split"]["fractions"])
    if e["train"]["validate_on"] not in _made_splits(e["split"]):
        out.append(f"{where}.train.validate_on: {e['train']['validate_on']!r} is not a split this experiment "
                   "makes (see split.keep_source, split.counts and split.fractions)")
    return out


def _study_checks(cfg: dict, name: str, st: dict) -> list[str]:
    where = f"studies.{name}"
    out = _run_references(cfg, where, st)
    if name in cfg.get("experiments", {}):
        out.append(f"{where}: also the name of an experiment; give it another")
    if st["train"]["gpus"] > 1:
        out.append(f"{where}.train.gpus: {st['train']['gpus']}; the study stages train on one GPU "
                   "(their heads are small; data-parallel training is for classifier experiments); set 1")
    n_cls = len(st["classes"])
    want = 1 if st["model"]["output"] == "sigmoid" else n_cls
    for b, spec in st["backbones"].items():
        units = spec["head"][-1].get("units")
        if units != want:
            out.append(f"{where}.backbones.{b}.head[-1].units: {units}, but output "
                       f"{st['model']['output']!r} with {n_cls} classes needs {want}")
    out += fraction_problems(where, st["split"]["fractions"])
    if st["fine_tune"]["count_layers"] == "keras":
        out += _keras_layer_lists(cfg, where, st)
    if st["train"]["validate_on"] not in _made_splits(st["split"]):
        out.append(f"{where}.train.validate_on: {st['train']['validate_on']!r} is not a split this study makes")
    return out


def _keras_layer_lists(cfg: dict, where: str, st: dict) -> list[str]:
    """Counting layers Keras' way needs Keras' layer list of each backbone's network."""
    from .keras_layers import APPLICATIONS, TORCHVISION_MAPPED

    out = []
    for b in st["backbones"]:
        keras_net = weights_kind(cfg["weights"].get(b)) == "keras"
        if b not in APPLICATIONS or not (keras_net or b in TORCHVISION_MAPPED):
            out.append(f"{where}.fine_tune.count_layers: 'keras', but there is no Keras layer list "
                       f"for the torchvision network of backbone {b!r} (have {sorted(TORCHVISION_MAPPED)}; "
                       f"with weights.{b}: keras also {sorted(set(APPLICATIONS) - TORCHVISION_MAPPED)}); "
                       "set 'torch' to count its torch modules")
    return out


def _paper_checks(cfg: dict, name: str, p: dict) -> list[str]:
    out = [f"papers.{name}.departures[{i}].setting: {d['setting']!r} is not a key of this config"
           for i, d in enumerate(p.get("departures", [])) if d.get("setting") and lookup(cfg, d["setting"]) is MISSING]
    runs = {**cfg.get("experiments", {}), **cfg.get("studies", {})}
    out += [f"papers.{name}.experiments: {ex!r} is neither an experiment nor a study of this config"
            for ex in p.get("experiments", []) if ex not in runs]
    for o in p.get("outputs", []) + p.get("compare", []):
        ex = o.get("experiment")
        if ex is not None and ex not in p.get("experiments", []):
            out.append(f"papers.{name}: output/compare {o.get('name', o.get('metric'))!r} names experiment "
                       f"{ex!r}, which is not in papers.{name}.experiments")
    return out


def _made_splits(split: dict) -> set[str]:
    return set(split["keep_source"]) | set(split.get("counts") or {}) | set(split["fractions"])


def fraction_problems(where: str, fractions: dict) -> list[str]:
    """The problem of a split's ``fractions`` (that no fold counts can be made of), if any."""
    from .splits import fold_counts

    if not fractions:
        return []
    try:
        fold_counts(fractions)
    except ValueError as exc:
        return [f"{where}.split.fractions: {exc}"]
    return []
