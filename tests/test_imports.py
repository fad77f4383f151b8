"""The package's structure: no import circle among its modules, deferred imports included."""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import medrepro

PACKAGE = Path(medrepro.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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
    assert len(graph) > 20 and "medrepro.pipeline" in graph["medrepro.study"]  # the walk sees the imports
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from exc
    assert order.index("medrepro.io") < order.index("medrepro.publish")
