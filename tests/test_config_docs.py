"""config/README.md against config/schema.yaml: every documented key exists in the schema, and every
default the README states is the schema's (the schema fills the defaults; the README must not drift
from it)."""
from __future__ import annotations

import re

import pytest
import yaml

from medrepro.config import _resolve

from .conftest import REPO

SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
README = (REPO / "config" / "README.md").read_text()


def resolve(node: dict) -> dict:
    """``node`` with its ``$ref`` followed, as the config loader follows it."""
    return _resolve(node, SCHEMA)


def section_root(title: str) -> dict | None:
    """The schema node a README section's table documents (None: a section without one)."""
    m = re.match(r"`(\w+)\.<name>`", title)
    if title == "Top level":
        return resolve(SCHEMA)
    if title.startswith("Detection experiments"):
        return section_root("`experiments.<name>`")
    if m and m.group(1) in ("experiments", "studies"):
        return resolve(SCHEMA["properties"][m.group(1)]["additionalProperties"])
    if m and m.group(1) == "datasets":
        return resolve(SCHEMA["properties"]["datasets"]["properties"]["rsna"])  # every dataset, one shape
    return None


def lookup(node: dict, dotted: str) -> dict | None:
    for part in dotted.split("."):
        node = resolve(node)
        if part == "<name>" and isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
            continue
        if part not in node.get("properties", {}):
            return None
        node = node["properties"][part]
    return resolve(node)


def filled(node: dict):
    """A node's default, with an object's defaults filled from its properties (as validation does)."""
    d = node.get("default")
    if isinstance(d, dict) and node.get("properties"):
        d = {**{k: filled(resolve(v)) for k, v in node["properties"].items() if "default" in resolve(v)}, **d}
    return d


def documented_rows():
    """(section, keys, default text) of every row of a key | default | meaning table."""
    title, has_default = None, False
    for line in README.splitlines():
        if line.startswith("#"):
            title, has_default = line.strip("# ").strip(), False
        elif line.startswith("| key | default |"):
            has_default = True
        elif has_default and line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            yield title, re.findall(r"`([\w.<>]+)`", cells[0]), cells[1]


def parse_default(text: str, n_keys: int) -> list:
    """The documented default of each key: `a`, `b` or 'a, b' for several keys; – for none."""
    tokens = [a if a else b for a, b in re.findall(r"`([^`]*)`|([^,\s(`]+)", text)][:n_keys]
    return [None if t in ("–", "-") else numbers(yaml.safe_load(t)) for t in tokens]


def numbers(v):
    """1e-5 as a number (YAML 1.1 reads a mantissa without a dot as a string)."""
    if isinstance(v, dict):
        return {k: numbers(x) for k, x in v.items()}
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


ROWS = [r for r in documented_rows() if section_root(r[0]) is not None]


def test_the_readme_documents_the_schemas_sections():
    assert len(ROWS) >= 80
    assert {r[0] for r in ROWS} >= {"Top level", "`experiments.<name>`", "`studies.<name>`", "`datasets.<name>`"}


@pytest.mark.parametrize("title,keys,text", ROWS, ids=[",".join(r[1]) for r in ROWS])
def test_each_documented_key_is_in_the_schema_with_that_default(title, keys, text):
    root = section_root(title)
    prefix = keys[0].rsplit(".", 1)[0] + "." if "." in keys[0] else ""
    full = [k if "." in k or not prefix else prefix + k for k in keys]  # `a.b`, `c`: c is a.c
    nodes = [lookup(root, k) for k in full]
    assert all(n is not None for n in nodes), f"{title}: {full} not all in the schema"
    if not any("default" in n for n in nodes) or "/" in text.split()[0]:
        return  # no default, or a mapping written as fractions (checked below)
    try:
        stated = parse_default(text, len(keys))
    except yaml.YAMLError:
        pytest.fail(f"{title}: {keys}: default {text!r} does not read as YAML")
    for key, node, value in zip(full, nodes, stated):
        if "default" not in node or isinstance(node["default"], list):
            continue
        want = filled(node)
        if isinstance(want, dict) and not isinstance(value, dict):
            continue  # an object described in words: its keys have rows of their own
        assert value == want, f"{title}: {key}: README says {value!r}, the schema {want!r}"


def test_split_fractions_as_written():
    text = next(t for s, k, t in ROWS if k == ["split.fractions"])
    node = lookup(section_root("`experiments.<name>`"), "split.fractions")
    assert [float(x) for x in text.split()[0].split("/")] == list(node["default"].values())
