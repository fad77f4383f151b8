"""Reporting checklists per paper: each TRIPOD+AI and CLAIM 2024 item, whether the paper reported
it, and whether this reproduction's outputs do, and in which file.

``config/checklists.yaml`` lists the items (in a few words of its own; the published checklists
give the full wording) and where this reproduction answers each; ``config/papers/<paper>/
checklist.yaml`` says what the paper reported, item by item (``yes``, ``partly``, ``no`` or
``n/a``, then what it gives or lacks) and may replace an item's answer for that paper (``here``).
A ``yes`` or ``partly`` of this reproduction whose file the run did not make reads ``no``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

STATUSES = ("yes", "partly", "no", "n/a")
UNCHECKED = ("report.md",)   # written after these tables: named, not looked for


def _read(path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def split_status(value, where: str) -> tuple[str, str]:
    """``"partly: what it gives"`` -> ``("partly", "what it gives")``; anything else is an error
    naming ``where`` and the statuses expected."""
    if isinstance(value, bool):   # YAML 1.1 reads an unquoted yes / no as a boolean
        value = "yes" if value else "no"
    text = str(value).strip() if value is not None else ""
    status, _, note = text.partition(":")
    status = status.strip()
    if status not in STATUSES:
        raise ValueError(f"{where}: {text!r} does not start with one of {', '.join(STATUSES)} "
                         "(then, optionally, ': ' and what the paper gives or lacks)")
    return status, note.strip()


def paper_table(checklists: dict, answers: dict, results, paper: str, source: str = "checklist.yaml") -> pd.DataFrame:
    """One row per item of every checklist: the paper's answer (``answers``, its checklist.yaml) and
    this reproduction's (the item's ``here``, or the paper's ``here`` override), checked against
    the files under ``results``.  Every item must be answered: a missing or extra one is an error
    naming ``source``, the checklist and the item."""
    unknown = sorted(set(answers) - set(checklists) - {"here"})
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; expected {sorted(checklists)} and optionally 'here'")
    rows = []
    overrides = answers.get("here") or {}
    for key, checklist in checklists.items():
        given = {str(k): v for k, v in (answers.get(key) or {}).items()}
        ids = [str(i["id"]) for i in checklist["items"]]
        missing, extra = [i for i in ids if i not in given], sorted(set(given) - set(ids))
        if missing or extra:
            raise ValueError(f"{source}: {key}: " + "; ".join(
                ([f"items {missing} not answered"] if missing else []) + ([f"items {extra} are not {key} items"]
                                                                          if extra else []))
                + f" (expected exactly {ids})")
        for item in checklist["items"]:
            iid = str(item["id"])
            status, note = split_status(given[iid], f"{source}: {key}.{iid}")
            here = {**item["here"], **((overrides.get(key) or {}).get(iid) or {})}
            rstatus, _ = split_status(here["status"], f"{key}.{iid}.here.status")
            rfile, rnote = (here.get("file") or "").replace("{paper}", paper), here.get("note", "")
            if rstatus in ("yes", "partly") and rfile and not rfile.startswith(UNCHECKED) \
                    and not (Path(results) / rfile).exists():
                rstatus, rnote = "no", f"not made: {rfile}"
                rfile = ""
            rows.append({"checklist": checklist["title"].split(" (")[0], "item": iid, "section": item["section"],
                         "topic": item["topic"], "paper": status, "in the paper": note, "reproduction": rstatus,
                         "file": rfile, "in this reproduction": rnote})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per checklist: items, those that apply (not n/a), and how many the paper and this
    reproduction report fully (yes) or in part."""
    out = []
    for name, part in table.groupby("checklist", sort=False):
        out.append({"checklist": name, "items": len(part),
                    "paper: yes": int((part["paper"] == "yes").sum()),
                    "paper: partly": int((part["paper"] == "partly").sum()),
                    "paper: applicable": int((part["paper"] != "n/a").sum()),
                    "reproduction: yes": int((part["reproduction"] == "yes").sum()),
                    "reproduction: partly": int((part["reproduction"] == "partly").sum()),
                    "reproduction: applicable": int((part["reproduction"] != "n/a").sum())})
    return pd.DataFrame(out)


def write_checklists(checklists_yaml, paper_files: dict, results, out_dir, scale: str = "demo") -> dict:
    """Every paper's table (:func:`paper_table`) and :func:`summary` as ``<paper>`` and
    ``<paper>_summary`` (CSV, Markdown, LaTeX) in ``out_dir``; returns paper -> summary."""
    from ..io import atomic_dir, write_json
    from ..provenance import record, short
    from ..tables import scale_note, write_table

    checklists = _read(checklists_yaml)
    prov = record({"checklists": str(checklists_yaml)})
    out = {}
    with atomic_dir(out_dir) as tmp:
        for paper, f in paper_files.items():
            table = paper_table(checklists, _read(f), results, paper, str(f))
            out[paper] = summary(table)
            names = " and ".join(c["title"] for c in checklists.values())
            write_table(table, tmp / paper, caption=f"{paper}: {names}, item by item: what the paper reported and "
                        "what this reproduction's outputs give, with the file", note=scale_note(scale),
                        provenance=short(prov))
            write_table(out[paper], tmp / f"{paper}_summary", caption=f"{paper}: items reported, by the paper and "
                        "by this reproduction", note=scale_note(scale), provenance=short(prov))
        write_json(tmp / "provenance.json", prov)
    return out
