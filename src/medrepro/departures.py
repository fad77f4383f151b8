"""A paper's departures (``papers.<paper>.departures``: the settings in which a run departs from
what the paper did) and the settings it states (``papers.<paper>.stated``), read against a
validated config: which departures this run makes, and any stated setting changed without one."""
from __future__ import annotations

MISSING = object()


def lookup(cfg: dict, dotted: str):
    """The value at ``dotted`` (``experiments.cnn_kermany.train.lr``) in ``cfg``, or :data:`MISSING`."""
    cur = cfg
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return MISSING
        cur = cur[part]
    return cur


def resolved_departures(cfg: dict, paper: str) -> list[dict]:
    """A paper's ``departures`` with the value each ``setting`` has in this config and whether
    it is the paper's (``follows``): the report shows which of them this run makes."""
    out = []
    for d in cfg["papers"][paper].get("departures", []):
        d = dict(d)
        if d.get("setting"):
            d["value"] = lookup(cfg, d["setting"])
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
            have = lookup(cfg, st["setting"])
            if have is MISSING:
                out.append(f"papers.{paper}.stated: {st['setting']} is not a key of this config")
            elif have != st["value"] and st["setting"] not in named:
                out.append(f"papers.{paper}: {st['setting']} is {have!r} here, the paper states {st['value']!r} "
                           f"({st['source']}), and no departure names it")
    return out
