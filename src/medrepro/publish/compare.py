"""Published against reproduced: dotted paths into a paper's transcription and the runs' metrics,
whole published tables expanded into comparison rows from patterns, the comparison table with each
reproduced value's interval and verdict, the coverage of every transcribed number, the headline
metrics against chance, the departures from the paper and the seed repeats."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_dir
from ..specs import CompareRow, Departure, HeadlineSpec, NotCompared, TablePattern, as_specs
from ..tables import scale_note, write_table
from ..uncertainty import flatten


def _step(cur, parts: list[str], i: int):
    """(the value under the longest key spelled by ``parts[i:j]``, j), or None: keys may hold dots
    (``vgg16.bs32``, ``lr_0.001``, a float key ``0.001``) and digits index lists."""
    if isinstance(cur, dict):
        keys = {str(k): k for k in cur}
        for j in range(len(parts), i, -1):
            name = ".".join(parts[i:j])
            if name in keys:
                return cur[keys[name]], j
    elif isinstance(cur, list) and parts[i].isdigit() and int(parts[i]) < len(cur):
        return cur[int(parts[i])], i + 1
    return None


def lookup(tree, dotted: str):
    """``lookup(d, 'a.b.c')`` -> d['a']['b']['c'] (None when absent).  Keys may contain '-' and '.'."""
    cur, parts, i = tree, dotted.split("."), 0
    while i < len(parts):
        nxt = _step(cur, parts, i)
        if nxt is None:
            return None
        cur, i = nxt
    return cur


class MissingPath(ValueError):
    """A dotted path of the config that names nothing in the file it points into."""


def lookup_strict(tree, dotted: str, where: str):
    """:func:`lookup`, but a path that does not exist (a typo, a metric never computed) is an error
    naming ``where``, the path, the first missing part and the keys that were there."""
    cur, parts, i = tree, dotted.split("."), 0
    while i < len(parts):
        nxt = _step(cur, parts, i)
        if nxt is None:
            have = sorted(map(str, cur)) if isinstance(cur, dict) else type(cur).__name__
            raise MissingPath(f"{where}: {dotted!r} does not exist (no {parts[i]!r} after "
                              f"{'.'.join(parts[:i]) or 'the top level'}; there: {have})")
        cur, i = nxt
    return cur


def expand_table_comparisons(entries, published: dict, metrics_by_exp: dict,
                             where: str = "compare_tables") -> tuple[list[CompareRow], list[tuple[str, str, str]]]:
    """Comparison rows for whole published tables, from patterns (``papers.<name>.compare_tables``).

    Each entry: ``published`` (a ``/``-separated pattern into the paper's YAML with ``{name}``
    segments, as :func:`medrepro.publish.audit.find`), ``experiment``, ``reproduced`` (a dotted path into
    that experiment's metrics.json) and ``metric`` (the row's label), all formatted with the
    bindings; ``derive`` ({new: {from: name or "{a}{b}", map: list | mapping | published path}}) names more
    values (a column index -> a metric name, a model's printed name -> a backbone); ``only``
    ({name: [values]}) keeps those bindings (:class:`medrepro.specs.TablePattern`, or mappings with
    its keys).  Returns the rows (:class:`medrepro.specs.CompareRow`) and, for
    published values whose reproduced path does not exist (a batch size the configuration does
    not run), ``(published path, reason, the missing experiment and path)``.
    """
    from .audit import find

    rows, skipped = [], []
    for k, e in enumerate(as_specs(TablePattern, entries, where)):
        matches = [m for m in find(published, e.published) if isinstance(m[1], (int, float))
                   and not isinstance(m[1], bool)]
        if not matches:
            raise MissingPath(f"{where}[{k}]: published {e.published!r} matches no number in the paper's YAML")
        for path, _, b in matches:
            b = dict(b)
            for new, d in (e.derive or {}).items():
                table = d["map"]
                if isinstance(table, str):
                    table = find(published, table.format(**b))[0][1]
                src = d["from"].format(**b) if "{" in d["from"] else b[d["from"]]
                if isinstance(table, list):
                    b[new] = table[int(src)] if int(src) < len(table) else None
                else:
                    keyed = {str(x): v for x, v in table.items()}
                    b[new] = keyed.get(str(src))
            if any(b.get(n) not in vals for n, vals in (e.only or {}).items()) or None in b.values():
                continue
            dotted = path.replace("/", ".")
            exp = e.experiment.format(**b)
            rep = e.reproduced.format(**b)
            if exp not in metrics_by_exp or lookup(metrics_by_exp[exp], rep) is None:
                skipped.append((dotted, "not run in this configuration (no reproduced value at the table "
                                        "pattern's path)", f"{exp}: {rep}"))
                continue
            rows.append(CompareRow(experiment=exp, metric=e.metric.format(**b), reproduced=rep, published=dotted))
    return rows, skipped


COMPARISON_COLUMNS = ["metric", "published", "reproduced", "ci_low", "ci_high", "interval", "difference",
                      "diff_low", "diff_high", "published error", "verdict"]
UNIT_NAMES = {"patient_id": "patients", "row": "images"}


def interval(metrics: dict, path: str) -> tuple[float | None, float | None]:
    """The bootstrap interval of ``path`` that the evaluation step recorded (None, None without one)."""
    ci = ((metrics.get("ci") or {}).get("intervals") or {}).get(path)
    return (float(ci[0]), float(ci[1])) if ci else (None, None)


def interval_basis(metrics: dict, path: str) -> str:
    """What the interval of ``path`` rests on, in a few words: the resamples and resampling units
    (flagged when few, or when images were resampled for want of patient ids), Clopper-Pearson's
    k of n where the bootstrap could only give 0 or 1, 'fixed by the test set' for its totals, ''
    without an interval."""
    from ..uncertainty import FIXED_LEAVES

    ci = metrics.get("ci") or {}
    if path in (ci.get("exact") or {}):
        return ci["exact"][path].replace("Clopper-Pearson, ", "exact (Clopper-Pearson): ")
    if path not in (ci.get("intervals") or {}):
        return "fixed by the test set" if ci and path.rpartition(".")[2] in FIXED_LEAVES else ""
    text = f"{ci['n_resamples']} resamples of {ci['units']} {UNIT_NAMES.get(ci['unit'], ci['unit'])}"
    if ci.get("fallback"):
        text += " (some without a patient id)"
    elif ci.get("warning"):
        text += " (few: rough)"
    return text


def test_size(flat: dict[str, float], path: str) -> int | None:
    """The number of test images behind ``path`` of a flattened metrics.json: the nearest
    ancestor's ``n`` or ``total``, else the detection metrics' ``test_images``."""
    parts = path.split(".")
    for i in range(len(parts) - 1, -1, -1):
        pre = ".".join(parts[:i]) + "." if i else ""
        for key in ("n", "total", "test_images"):
            if pre + key in flat:
                return int(flat[pre + key])
    return None


def published_test_size(spec_value, published: dict, experiment: str) -> int | None:
    """The paper's test-set size for ``experiment`` from ``papers.<paper>.published_test_size``:
    a number, a dotted path into the published YAML (a mapping there is summed), or a mapping
    from experiment to either; None when not given."""
    v = spec_value.get(experiment) if isinstance(spec_value, Mapping) else spec_value
    if isinstance(v, str):
        v = lookup_strict(published, v, f"published_test_size of {experiment}")
        v = sum(flatten(v).values()) if isinstance(v, (dict, list)) else v
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def comparison_table(metrics: dict, published: dict, compare, where: str = "compare",
                     verdict: dict | None = None, published_n: int | None = None) -> pd.DataFrame:
    """Published beside reproduced, a row per ``compare`` entry (:class:`medrepro.specs.CompareRow`,
    or a mapping with its keys), with the reproduced value's 95 % bootstrap interval (``ci_low``,
    ``ci_high``: test images resampled by patient) and what it rests on (``interval``), and the
    difference as two estimates compared (:func:`medrepro.uncertainty.compare_estimates`): its
    interval with both errors (``published error``: how the published value's was had from the
    paper's test-set size ``published_n``, :func:`medrepro.uncertainty.published_se`) and a
    verdict, consistent / different / inconclusive (``verdict``: the config's ``margin`` and
    ``confidence``).  A path that names nothing (in the metrics or in the published YAML) is a
    :class:`MissingPath` error, never a blank cell; a value that exists but is empty (no
    detections, say) stays blank."""
    from scipy import stats

    from ..uncertainty import CONFIDENCE, FIXED_LEAVES, compare_estimates, proportion_base, published_se

    # without the config's block: the intervals' confidence and no equivalence claimed
    confidence, margin = (verdict["confidence"], verdict["margin"]) if verdict else (CONFIDENCE, None)
    flat = flatten(metrics)
    rows = []
    for c in as_specs(CompareRow, compare, where):
        label = f"{where} {c.metric!r}"
        rep = lookup_strict(metrics, c.reproduced,
                            f"{label}: reproduced (metrics.json of {c.experiment or 'its experiment'})")
        pub = lookup_strict(published, c.published, f"{label}: published (the paper's YAML)")
        rep = float(rep) if isinstance(rep, (int, float)) else None
        pub = float(pub) if isinstance(pub, (int, float)) else None
        low, high = interval(metrics, c.reproduced)
        row = {"metric": c.metric, "published": pub, "reproduced": rep, "ci_low": low, "ci_high": high,
               "interval": interval_basis(metrics, c.reproduced),
               "difference": (rep - pub) if rep is not None and pub is not None else None,
               "diff_low": None, "diff_high": None, "published error": ""}
        if pub is None:
            row["verdict"] = "no published value"
        elif rep is None:
            row["verdict"] = "no reproduced value"
        elif low is None:
            row["verdict"] = ("a count the test set fixes" if c.reproduced.rpartition(".")[2] in FIXED_LEAVES
                              else "no interval (a training-curve or selection value)")
        else:
            rep_se = (high - low) / (2 * float(stats.norm.ppf(1 - (1 - confidence) / 2)))
            pub_se, kind = published_se(pub, proportion_base(flat, c.reproduced), rep_se,
                                        test_size(flat, c.reproduced), published_n, confidence)
            res = compare_estimates(pub, rep, low, high, pub_se, margin, confidence)
            row.update(diff_low=res["diff_low"], diff_high=res["diff_high"], verdict=res["verdict"],
                       **{"published error": kind})
        rows.append(row)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


SPLIT_SEGMENTS = ("test", "val", "train")


def quantity_key(metrics: dict, path: str) -> tuple[str, str]:
    """What a reproduced path measures, whatever it is called: the evaluation it reads (the whole
    ``test``, ``val`` or ``train`` block its path passes through, as JSON) and the rest of the path.
    ``stage1.best_per_backbone.vgg16.test.f1`` and ``stage1.runs.vgg16.bs32.test.f1`` give one key
    when batch size 32 was VGG-16's best: the same run's block.  A path through no such block is
    its own key."""
    parts = path.split(".")
    cut = max((i for i, p in enumerate(parts[:-1]) if p in SPLIT_SEGMENTS), default=None)
    if cut is None:
        return path, ""
    block = lookup(metrics, ".".join(parts[:cut + 1]))
    if block is None:   # not there: the row's own key (comparison_table names the missing path)
        return path, ""
    return json.dumps(block, sort_keys=True, default=str), ".".join(parts[cut + 1:])


def merge_repeated(compare, published: dict, metrics_by_exp: dict) -> list[list]:
    """``compare`` rows grouped where a paper prints one number in several tables: the same
    published value for the same reproduced quantity (:func:`quantity_key`) of one experiment.
    Groups in the order of their first rows; a misprint (the same quantity with another published
    value) stays a group of its own."""
    groups: dict = {}
    for c in compare:
        metrics = metrics_by_exp.get(c.experiment) or {}
        key = (c.experiment, *quantity_key(metrics, c.reproduced), repr(lookup(published, c.published)))
        groups.setdefault(key, []).append(c)
    return list(groups.values())


def also_labels(group) -> str:
    """The labels of a group's other rows (:func:`merge_repeated`), without the metric when it is
    the first row's: ``"Table 5.6 TC a (stage 2); Table 5.7 TC a (stage 2)"``."""
    first = group[0].metric.rpartition(": ")[2]
    out = []
    for c in group[1:]:
        head, sep, tail = c.metric.rpartition(": ")
        out.append(head if sep and tail == first else c.metric)
    return "; ".join(out)


def merged_rows(groups) -> dict[str, str]:
    """Published path -> the comparison row that carries it (:func:`merge_repeated`), for the
    coverage table: ``"<experiment>: <the group's first label>"``."""
    return {c.published: f"{g[0].experiment or ''}: {g[0].metric}".lstrip(": ") for g in groups for c in g}


def published_values(tree, prefix: str = "reported"):
    """Every number of a published YAML block as (dotted path, value); list items by index
    (``reported.table5_5_augmentation.TC.b.3``, the paths ``compare`` rows use)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from published_values(v, f"{prefix}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from published_values(v, f"{prefix}.{i}")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield prefix, tree


def coverage_table(published: dict, compare, not_compared, skipped=(), rows_as: dict | None = None) -> pd.DataFrame:
    """Every transcribed number of the paper (``reported``), and whether a comparison row
    (``compare``) sets it beside a reproduced one; if not, the reason: ``skipped``'s (``(path,
    reason, detail)`` of :func:`expand_table_comparisons`) for that path, else ``not_compared``'s
    (:class:`medrepro.specs.NotCompared`: the longest matching path prefix's), else 'no comparison
    row configured'.  ``rows_as`` (:func:`merged_rows`) names the row a merged value is compared in."""
    compared: dict = {}
    for c in as_specs(CompareRow, compare, "compare"):
        compared.setdefault(c.published, []).append(
            (rows_as or {}).get(c.published) or f"{c.experiment or ''}: {c.metric}".lstrip(": "))
    rules = sorted([(r.published, r.reason, "") for r in as_specs(NotCompared, not_compared, "not_compared")]
                   + [tuple(s) for s in skipped], key=lambda r: -len(r[0]))
    rows = []
    for path, value in published_values(published.get("reported") or {}):
        if path in compared:
            status, reason, detail = "compared", "", "; ".join(compared[path])
        else:
            rule = next((r for r in rules if path == r[0] or path.startswith(r[0] + ".")), None)
            status = "not compared"
            reason, detail = (rule[1], rule[2]) if rule else ("no comparison row configured", "")
        rows.append({"published path": path, "published": value, "status": status, "reason": reason,
                     "row or detail": detail})
    return pd.DataFrame(rows, columns=["published path", "published", "status", "reason", "row or detail"])


def repeats_table(headlines, runs: dict[str, list[str]]) -> pd.DataFrame:
    """Each headline metric (:class:`medrepro.specs.HeadlineSpec`, or a mapping with its keys) of a
    repeated experiment over its runs (``runs``: experiment -> the metrics.json of the original and
    of each seed repeat): mean, sample sd, min, max and values."""
    rows = []
    for h in as_specs(HeadlineSpec, headlines, "headline"):
        files = runs.get(h.experiment)
        if not files:
            continue
        vals = [float(lookup_strict(json.loads(Path(f).read_text()), h.reproduced,
                                    f"headline {h.metric!r} of {f}")) for f in files]
        rows.append({"experiment": h.experiment, "metric": h.metric, "runs": len(vals),
                     "mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                     "min": min(vals), "max": max(vals), "values": ", ".join(f"{v:.3f}" for v in vals)})
    return pd.DataFrame(rows, columns=["experiment", "metric", "runs", "mean", "sd", "min", "max", "values"])


def write_repeats(headlines, runs: dict[str, list[str]], out_dir, scale: str = "demo") -> pd.DataFrame:
    """:func:`repeats_table` as ``repeats`` (CSV, Markdown, LaTeX) in ``out_dir``."""
    from ..provenance import record, short

    table = repeats_table(headlines, runs)
    with atomic_dir(out_dir) as tmp:
        write_table(table, tmp / "repeats", caption="headline metrics over seed repeats (mean and sample sd)",
                    note=scale_note(scale), provenance=short(record({"runs": runs})))
    return table


def headline_table(metrics_by_exp: dict, headline) -> pd.DataFrame:
    """One row per headline metric (:class:`medrepro.specs.HeadlineSpec`, or a mapping with its
    keys): its value, the chance level it must beat (both read from the experiment's metrics.json),
    the margin, and whether it is above chance."""
    rows = []
    for h in as_specs(HeadlineSpec, headline, "headline"):
        m = metrics_by_exp[h.experiment]
        where = f"headline {h.metric!r} of {h.experiment}"
        rep, chance = lookup_strict(m, h.reproduced, where), lookup_strict(m, h.chance, where)
        for key, v in (("reproduced", rep), ("chance", chance)):
            if not isinstance(v, (int, float)):
                raise ValueError(f"headline {h.metric!r} of {h.experiment}: {getattr(h, key)!r} is not a number in "
                                 f"its metrics.json (got {v!r})")
        low, high = interval(m, h.reproduced)
        rows.append({"experiment": h.experiment, "metric": h.metric, "reproduced": float(rep),
                     "ci_low": low, "ci_high": high, "chance": float(chance), "margin": float(rep) - float(chance),
                     "above chance": "yes" if rep > chance else "no",
                     "CI above chance": "-" if low is None else ("yes" if low > chance else "no")})
    return pd.DataFrame(rows, columns=["experiment", "metric", "reproduced", "ci_low", "ci_high", "chance", "margin",
                                       "above chance", "CI above chance"])


def calibration_table(entries: dict) -> pd.DataFrame:
    """One row per classifier: ``entries`` maps a row label to (metrics.json, the path of its
    calibrated numbers: ``test`` for an experiment, ``best`` for a study's best configuration); the
    test images, accuracy, Brier score and expected calibration error
    (:func:`medrepro.metrics.calibration`), each with its bootstrap interval."""
    rows = []
    for label, (m, at) in entries.items():
        n = m[at]["n"] if "n" in m[at] else m[at]["total"]
        row = {"experiment": label, "n": int(n), "accuracy": float(m[at]["accuracy"])}
        for key in ("brier", "ece"):
            low, high = interval(m, f"{at}.{key}")
            row.update({key: float(m[at][key]), f"{key}_low": low, f"{key}_high": high})
        rows.append(row)
    return pd.DataFrame(rows, columns=["experiment", "n", "accuracy", "brier", "brier_low", "brier_high", "ece",
                                       "ece_low", "ece_high"])


def departures_table(departures) -> pd.DataFrame:
    """One row per departure (:class:`medrepro.specs.Departure`, or a mapping with its keys, as
    :func:`medrepro.departures.resolved_departures` writes them): what the paper did, what this run does
    (with the deciding setting and its value), why, and which numbers it touches."""
    rows = []
    for d in as_specs(Departure, departures, "departure"):
        here = d.here
        if d.setting:
            state = "as the paper" if d.follows else "departs"
            here += f" [{d.setting} = {d.value!r}: {state}]"
        rows.append({"topic": d.topic, "paper": d.paper, "this run": here, "why": d.why, "touches": d.touches})
    return pd.DataFrame(rows, columns=["topic", "paper", "this run", "why", "touches"])
