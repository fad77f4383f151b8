"""The package's structure: no import circle among its modules (deferred imports included), each task
wing importing only the base modules and the wings below it, and no private name imported from
another module."""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import medrepro

PACKAGE = Path(medrepro.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_imports(path: Path) -> list[str]:
    """``from <medrepro module> import _name`` anywhere in ``path`` (the name of another module)."""
    here = module_name(path)
    package = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] == "medrepro":
                found += [f"{target}.{a.name}" for a in node.names if a.name.startswith("_")
                          and a.name != "__version__"]
    return found


def imports(path: Path) -> set[str]:
    """The medrepro modules ``path`` imports anywhere in its body (module level or inside functions):
    ``from .x import y`` counts as importing ``x`` and, where ``y`` is a module, ``x.y``."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] == "medrepro":
                found |= {target} | {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "medrepro"}
    return found


def test_no_import_circle():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {t for t in imports(p) if t in modules and t != m and not m.startswith(t + ".")}
             for m, p in modules.items()}
    assert len(graph) > 20 and "medrepro.classify.run" in graph["medrepro.study.stages"]  # the walk sees imports
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from exc
    assert order.index("medrepro.io") < order.index("medrepro.publish.paper")


# the task wings, lowest first: a wing may import the base modules (the package's top level and
# datasets/, synth/) and the wings before it in this list, never one after it
WINGS = ["classify", "study", "detect", "publish"]


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in WINGS else None


def test_wings_import_only_base_modules_and_lower_wings():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    assert {wing(m) for m in modules} >= set(WINGS)
    wrong = []
    for m, p in modules.items():
        rank = WINGS.index(wing(m)) if wing(m) else -1
        for t in imports(p):
            if t not in modules or t == m:
                continue
            if wing(t) is None or rank >= WINGS.index(wing(t)):
                continue  # a base module, a lower wing or its own
            wrong.append(f"{m} imports {t}")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_private_name():
    found = [f"{module_name(p)}: {name}" for p in PACKAGE.rglob("*.py") for name in private_imports(p)]
    assert not found, "\n".join(found)


def test_a_step_without_augmentation_neither_imports_albumentations_nor_goes_online():
    """albumentations costs about a second of a step's start and, unless NO_ALBUMENTATIONS_UPDATE is
    set, asks PyPI for a newer release on import (up to 2 s where a node has no internet): the
    steps that do not augment never import it, and those that do make no network call for it."""
    import os
    import subprocess
    import sys

    code = """
import os, sys
calls = []
sys.addaudithook(lambda event, args: calls.append(event) if event.startswith(("socket.", "urllib.")) else None)
import medrepro.data, medrepro.classify.run, medrepro.classify.features, medrepro.detect.preprocessing
assert "albumentations" not in sys.modules, "imported without augmentation"
from medrepro.data import build_augmentation
assert build_augmentation([], 0) is None and "albumentations" not in sys.modules
t = build_augmentation([{"name": "HorizontalFlip", "params": {"p": 0.5}}], 0)
assert type(t).__name__ == "Compose" and "albumentations" in sys.modules
assert not calls, calls
print("ok", os.environ["NO_ALBUMENTATIONS_UPDATE"])
"""
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "1"]


def test_training_and_prediction_steps_start_without_scikit_learn():
    """scikit-learn's metrics bring SciPy's statistics (about 0.8 s of a job's start on a 2-core
    machine): the modules the train and predict adapters import leave them out until a score is
    computed, and computing one still works."""
    import subprocess
    import sys

    code = """
import sys
import medrepro.classify.steps, medrepro.distributed, medrepro.io, medrepro.metrics
heavy = sorted(m for m in ("sklearn", "scipy.stats") if m in sys.modules)
assert not heavy, heavy
import pandas as pd
from medrepro.metrics import classification_metrics
pred = pd.DataFrame({"target": [0, 1, 1, 0], "pred": [0, 1, 0, 0], "prob_a": [0.9, 0.2, 0.6, 0.7],
                     "prob_b": [0.1, 0.8, 0.4, 0.3]})
m = classification_metrics(pred, ["a", "b"])
assert "sklearn" in sys.modules and m["accuracy"] == 0.75 and m["auc"] == 1.0, m
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok"]
