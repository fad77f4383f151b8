"""Defaults live in config/schema.yaml only: the config is validated (and its defaults filled in)
before any step reads it, so package code that reads a run's settings must not carry a second
default of its own (two defaults drift apart: the schema's ``model.channels`` is 1 for experiments
and 3 for studies, where code once said 1 in one module and 3 in another)."""
from __future__ import annotations

import ast

from .conftest import REPO, demo_config
from .test_config_docs import SCHEMA, resolve

PACKAGE = REPO / "src" / "medrepro"
# the modules that read validated settings (experiments, studies, their train blocks, bootstrap, papers)
SCANNED = [*sorted((PACKAGE / "classify").glob("*.py")), *sorted((PACKAGE / "study").glob("*.py")),
           *sorted((PACKAGE / "detect").glob("*.py")), *sorted((PACKAGE / "publish").glob("*.py")),
           PACKAGE / "accel.py", PACKAGE / "uncertainty.py", PACKAGE / "prepare.py"]
CONFIG_FUNCTIONS = {"uses_feature_cache", "feature_key", "study_run_spec", "study_features"}


def schema_defaults() -> set[str]:
    """Names of the keys the schema fills in a run's settings and a paper's block."""
    names: set[str] = set()

    def walk(node, depth=0):
        node = resolve(node)
        if not isinstance(node, dict) or depth > 12:
            return
        for key, sub in (node.get("properties") or {}).items():
            sub = resolve(sub)
            if isinstance(sub, dict) and "default" in sub:
                names.add(key)
            walk(sub, depth + 1)
        for k in ("additionalProperties", "items"):
            if isinstance(node.get(k), dict):
                walk(node[k], depth + 1)

    for part in ("experiments", "studies", "bootstrap", "papers"):
        walk(SCHEMA["properties"][part])
    return names


def _literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except ValueError:
        return False


def code_defaults(path, functions: set[str] | None = None, source: str | None = None
                  ) -> list[tuple[str, int, str, str]]:
    """(function, line, key, default) of every ``x.get("key", <literal>)`` in ``path`` (or in
    ``source``, read as that file)."""
    rel = path.relative_to(PACKAGE).as_posix()
    out = []
    for fn in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if not isinstance(fn, ast.FunctionDef) or (functions is not None and fn.name not in functions):
            continue
        for n in ast.walk(fn):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get" \
                    and len(n.args) == 2 and isinstance(n.args[0], ast.Constant) and _literal(n.args[1]):
                out.append((f"{rel}:{fn.name}", n.lineno, n.args[0].value, ast.unparse(n.args[1])))
    return out


def test_run_settings_have_no_default_in_code():
    keys = schema_defaults()
    assert {"channels", "pool", "freeze", "normalize", "init", "arch", "threshold", "deterministic",
            "channels_last", "allow_cpu", "count_layers", "confidence", "feature_cache", "outputs",
            "compare", "compare_tables", "not_compared", "class_labels"} <= keys
    found = [c for p in SCANNED for c in code_defaults(p)] + code_defaults(PACKAGE / "plan.py", CONFIG_FUNCTIONS)
    doubled = [f"{where} line {line}: .get({key!r}, {default}) (the schema fills {key!r})"
               for where, line, key, default in found if key in keys]
    assert not doubled, "\n".join(doubled)


def test_the_scan_finds_a_planted_default():
    """The check above is not vacuous: a second default of ``channels`` is found."""
    planted = PACKAGE / "classify" / "features.py"
    src = planted.read_text().replace("ImageTable(df, m.input_size, m.channels, cache=False)",
                                      'ImageTable(df, m.input_size, model.get("channels", 3), cache=False)')
    assert src != planted.read_text()
    assert code_defaults(planted) == []
    assert [(k, d) for _, _, k, d in code_defaults(planted, source=src)] == [("channels", "3")]


def test_validated_specs_hold_every_key_the_code_reads():
    """Every experiment's and study's run spec of the demo and full configs is complete after
    validation: the keys the code now reads without a default are there."""
    for cfg in (demo_config(), demo_config("full.yaml")):
        for e in cfg["experiments"].values():
            assert {"arch", "channels", "freeze", "normalize", "pool", "init"} <= set(e["model"])
            assert {"device", "gpus", "amp", "allow_cpu", "channels_last", "deterministic", "feature_cache"} \
                <= set(e["train"])
            assert "threshold" in e and "augment" in e
        for s in cfg["studies"].values():
            assert {"channels", "normalize", "pool", "init"} <= set(s["model"])
            assert "count_layers" in s["fine_tune"]
        assert {"seed", "confidence", "n_resamples"} <= set(cfg["bootstrap"])
        for p in cfg["papers"].values():
            assert {"outputs", "compare", "compare_tables", "not_compared", "class_labels"} <= set(p)
        assert all(e["subset"] is None or "seed" in e["subset"] for e in cfg["experiments"].values())
