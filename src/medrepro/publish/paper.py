"""A paper's tables and figures, from a list of outputs in config.

Each paper lists its outputs under ``papers.<name>.outputs``; each output has a
``kind``, a ``name`` (the file stem, after the paper's numbering, e.g.
``fig21_accuracy``), an optional ``experiment`` (default: the paper's first)
and the kind's own options:

=========================== ======= ===================================================================
kind                        writes  options
=========================== ======= ===================================================================
``classification_report``   table   ``split`` (test): precision, recall, F1, support per class
``confusion_matrix``        figure  ``split`` (test)
``learning_curves``         figure  ``metrics`` ([accuracy, loss]): train vs validation per epoch
``history``                 table   the per-epoch log (loss, accuracy, val_loss, val_accuracy, lr)
``model_summary``           table   layers, output shapes, parameters (trainable too)
``class_counts``            both    images per class and split
``sample_grid``             figure  ``label`` (a class name), ``n`` (25), ``size`` (128), ``split`` (train)
``intensity_histogram``     figure  ``index`` (0), ``split`` (train): one image beside its histogram
``metrics_table``           table   ``experiments`` (rows), ``columns`` ({column: dotted path into metrics.json}),
                                    ``row_labels``
``roc_curve``               figure  ``split`` (test): ROC of a binary classifier with its AUC
``equalization``            figure  ``split`` (test), ``label``, ``index``, ``size``, ``method`` (global): an image
                                    before and after equalisation with histograms and cumulative distributions
``mask_overlay``            figure  ``pick`` (median/best/worst per-image IoU): annotated mask, predicted mask,
                                    union and intersection (detection experiments)
``iou_distribution``        figure  ``experiments``: per-image IoU histogram and box plot (detection)
``detection_confusion``     figure  ``experiments``, ``class_names``: image-level confusion matrices (detection)
=========================== ======= ===================================================================

Every paper also gets ``tables/comparison`` (published vs reproduced, from
``papers.<name>.compare``) and ``inconsistencies.md`` (from the published YAML).
No paper is special-cased: a paper is the list of its outputs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from matplotlib.colors import to_rgb
from PIL import Image

from ..config import scale_note
from ..figures import OKABE_ITO, apply_style, confusion_matrix_figure, learning_curves_figure, save_figure
from ..io import atomic_dir, read_csv, write_json, write_text
from ..metrics import report_table
from ..tables import write_table


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


def expand_table_comparisons(entries: list[dict], published: dict, metrics_by_exp: dict,
                             where: str = "compare_tables") -> tuple[list[dict], list[tuple[str, str]]]:
    """Comparison rows for whole published tables, from patterns (``papers.<name>.compare_tables``).

    Each entry: ``published`` (a ``/``-separated pattern into the paper's YAML with ``{name}``
    segments, as :func:`medrepro.publish.audit.find`), ``experiment``, ``reproduced`` (a dotted path into
    that experiment's metrics.json) and ``metric`` (the row's label), all formatted with the
    bindings; ``derive`` ({new: {from: name or "{a}{b}", map: list | mapping | published path}}) names more
    values (a column index -> a metric name, a model's printed name -> a backbone); ``only``
    ({name: [values]}) keeps those bindings.  Returns the rows (``compare`` entries) and, for
    published values whose reproduced path does not exist (a batch size the configuration does
    not run), ``(published path, reason, the missing experiment and path)``.
    """
    from .audit import find

    rows, skipped = [], []
    for k, e in enumerate(entries):
        matches = [m for m in find(published, e["published"]) if isinstance(m[1], (int, float))
                   and not isinstance(m[1], bool)]
        if not matches:
            raise MissingPath(f"{where}[{k}]: published {e['published']!r} matches no number in the paper's YAML")
        for path, _, b in matches:
            b = dict(b)
            for new, d in (e.get("derive") or {}).items():
                table = d["map"]
                if isinstance(table, str):
                    table = find(published, table.format(**b))[0][1]
                src = d["from"].format(**b) if "{" in d["from"] else b[d["from"]]
                if isinstance(table, list):
                    b[new] = table[int(src)] if int(src) < len(table) else None
                else:
                    keyed = {str(x): v for x, v in table.items()}
                    b[new] = keyed.get(str(src))
            if any(b.get(n) not in vals for n, vals in (e.get("only") or {}).items()) or None in b.values():
                continue
            dotted = path.replace("/", ".")
            exp = e["experiment"].format(**b)
            rep = e["reproduced"].format(**b)
            if exp not in metrics_by_exp or lookup(metrics_by_exp[exp], rep) is None:
                skipped.append((dotted, "not run in this configuration (no reproduced value at the table "
                                        "pattern's path)", f"{exp}: {rep}"))
                continue
            rows.append({"experiment": exp, "metric": e["metric"].format(**b), "reproduced": rep, "published": dotted})
    return rows, skipped


COMPARISON_COLUMNS = ["metric", "published", "reproduced", "ci_low", "ci_high", "difference", "verdict"]


def interval(metrics: dict, path: str) -> tuple[float | None, float | None]:
    """The bootstrap interval of ``path`` that the evaluation step recorded (None, None without one)."""
    ci = ((metrics.get("ci") or {}).get("intervals") or {}).get(path)
    return (float(ci[0]), float(ci[1])) if ci else (None, None)


def comparison_table(metrics: dict, published: dict, compare: list[dict], where: str = "compare",
                     scale: str = "full") -> pd.DataFrame:
    """Published beside reproduced, a row per ``compare`` entry, with the reproduced value's 95 %
    bootstrap interval (``ci_low``, ``ci_high``: test images resampled by patient) and a verdict in
    words (:func:`medrepro.uncertainty.verdict`).  A path that names nothing (in the metrics or in
    the published YAML) is a :class:`MissingPath` error, never a blank cell; a value that exists but
    is empty (no detections, say) stays blank."""
    from ..uncertainty import verdict

    rows = []
    for c in compare:
        label = f"{where} {c['metric']!r}"
        rep = lookup_strict(metrics, c["reproduced"],
                            f"{label}: reproduced (metrics.json of {c.get('experiment', 'its experiment')})")
        pub = lookup_strict(published, c["published"], f"{label}: published (the paper's YAML)")
        rep = float(rep) if isinstance(rep, (int, float)) else None
        pub = float(pub) if isinstance(pub, (int, float)) else None
        low, high = interval(metrics, c["reproduced"])
        rows.append({"metric": c["metric"], "published": pub, "reproduced": rep, "ci_low": low, "ci_high": high,
                     "difference": (rep - pub) if rep is not None and pub is not None else None,
                     "verdict": verdict(pub, low, high, scale)})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


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


def coverage_table(published: dict, compare: list[dict], not_compared: list[dict]) -> pd.DataFrame:
    """Every transcribed number of the paper (``reported``), and whether a comparison row sets it
    beside a reproduced one; if not, the reason (``not_compared``: the longest matching path
    prefix's; 'no comparison row configured' when none matches)."""
    compared: dict = {}
    for c in compare:
        compared.setdefault(c["published"], []).append(f"{c.get('experiment', '')}: {c['metric']}".lstrip(": "))
    rules = sorted(not_compared, key=lambda r: -len(r["published"]))
    rows = []
    for path, value in published_values(published.get("reported") or {}):
        if path in compared:
            status, reason, detail = "compared", "", "; ".join(compared[path])
        else:
            rule = next((r for r in rules if path == r["published"] or path.startswith(r["published"] + ".")), None)
            status = "not compared"
            reason = rule["reason"] if rule else "no comparison row configured"
            detail = (rule or {}).get("detail", "")
        rows.append({"published path": path, "published": value, "status": status, "reason": reason,
                     "row or detail": detail})
    return pd.DataFrame(rows, columns=["published path", "published", "status", "reason", "row or detail"])


def repeats_table(headlines: list[dict], runs: dict[str, list[str]]) -> pd.DataFrame:
    """Each headline metric of a repeated experiment over its runs (``runs``: experiment -> the
    metrics.json of the original and of each seed repeat): mean, sample sd, min, max and values."""
    rows = []
    for h in headlines:
        files = runs.get(h["experiment"])
        if not files:
            continue
        vals = [float(lookup_strict(json.loads(Path(f).read_text()), h["reproduced"],
                                    f"headline {h['metric']!r} of {f}")) for f in files]
        rows.append({"experiment": h["experiment"], "metric": h["metric"], "runs": len(vals),
                     "mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                     "min": min(vals), "max": max(vals), "values": ", ".join(f"{v:.3f}" for v in vals)})
    return pd.DataFrame(rows, columns=["experiment", "metric", "runs", "mean", "sd", "min", "max", "values"])


def write_repeats(headlines: list[dict], runs: dict[str, list[str]], out_dir, scale: str = "demo") -> pd.DataFrame:
    """:func:`repeats_table` as ``repeats`` (CSV, Markdown, LaTeX) in ``out_dir``."""
    from ..provenance import record, short

    table = repeats_table(headlines, runs)
    with atomic_dir(out_dir) as tmp:
        write_table(table, tmp / "repeats", caption="headline metrics over seed repeats (mean and sample sd)",
                    note=scale_note(scale), provenance=short(record({"runs": runs})))
    return table


def headline_table(metrics_by_exp: dict, headline: list[dict]) -> pd.DataFrame:
    """One row per headline metric: its value, the chance level it must beat (both read from the
    experiment's metrics.json), the margin, and whether it is above chance."""
    rows = []
    for h in headline:
        m = metrics_by_exp[h["experiment"]]
        where = f"headline {h['metric']!r} of {h['experiment']}"
        rep, chance = lookup_strict(m, h["reproduced"], where), lookup_strict(m, h["chance"], where)
        for key, v in (("reproduced", rep), ("chance", chance)):
            if not isinstance(v, (int, float)):
                raise ValueError(f"headline {h['metric']!r} of {h['experiment']}: {h[key]!r} is not a number in "
                                 f"its metrics.json (got {v!r})")
        low, high = interval(m, h["reproduced"])
        rows.append({"experiment": h["experiment"], "metric": h["metric"], "reproduced": float(rep),
                     "ci_low": low, "ci_high": high, "chance": float(chance), "margin": float(rep) - float(chance),
                     "above chance": "yes" if rep > chance else "no",
                     "CI above chance": "-" if low is None else ("yes" if low > chance else "no")})
    return pd.DataFrame(rows, columns=["experiment", "metric", "reproduced", "ci_low", "ci_high", "chance", "margin",
                                       "above chance", "CI above chance"])


def departures_table(departures: list[dict]) -> pd.DataFrame:
    """One row per departure: what the paper did, what this run does (with the deciding setting
    and its value), why, and which numbers it touches."""
    rows = []
    for d in departures:
        here = d["here"]
        if d.get("setting"):
            state = "as the paper" if d.get("follows") else "departs"
            here += f" [{d['setting']} = {d.get('value')!r}: {state}]"
        rows.append({"topic": d["topic"], "paper": d["paper"], "this run": here, "why": d["why"],
                     "touches": d["touches"]})
    return pd.DataFrame(rows, columns=["topic", "paper", "this run", "why", "touches"])


class Context:
    """What an output may read: one experiment's files, loaded on first use."""

    def __init__(self, paper: str, files: dict, labels: dict, style, note: str, out: Path, all_files=None,
                 provenance: str = "", experiment: str | None = None, layouts: dict | None = None):
        self.paper, self.files, self.labels, self.style, self.note, self.out = paper, files, labels, style, note, out
        self.experiment = experiment
        self.all_files = all_files or {}
        self.provenance = provenance
        self.layouts = layouts or {}   # output name -> natural / single / double
        apply_style(style)  # before the first figure is drawn, not when it is saved

    def metrics(self) -> dict:
        return json.loads(Path(self.files["metrics"]).read_text())

    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.files["history"])

    def split(self) -> pd.DataFrame:
        return read_csv(self.files["split"])

    def label(self, name: str) -> str:
        return self.labels.get(name, name)

    def table(self, df: pd.DataFrame, name: str, caption: str) -> list[Path]:
        return write_table(df, self.out / "tables" / name, caption=f"{self.paper}: {caption}", note=self.note,
                           provenance=self.provenance)

    def figure(self, fig, name: str) -> list[Path]:
        return save_figure(fig, self.out / "figures" / name, self.style, self.note, self.provenance,
                           layout=self.layouts.get(name))


def _classification_report(ctx: Context, o: dict):
    m = ctx.metrics()[o.get("split", "test")]
    return ctx.table(report_table(m, ctx.labels), o["name"], f"classification report ({o.get('split', 'test')})")


def _confusion_matrix(ctx: Context, o: dict):
    split = o.get("split", "test")
    m = ctx.metrics()[split]
    names = [ctx.label(n) for n in m["class_names"]]
    return ctx.figure(confusion_matrix_figure(m["confusion_matrix"], names, f"{ctx.paper}: confusion matrix ({split})"),
                      o["name"])


def _learning_curves(ctx: Context, o: dict):
    metrics = o.get("metrics", ["accuracy", "loss"])
    # named after the experiment where a paper has several (transfer_kermany's three figures shared one title)
    who = ctx.paper if ctx.experiment in (None, ctx.paper) else f"{ctx.paper}, {ctx.experiment}"
    return ctx.figure(learning_curves_figure(ctx.history(), f"{who}: learning curves", metrics), o["name"])


def _history(ctx: Context, o: dict):
    return ctx.table(ctx.history(), o["name"], "per-epoch training log")


def _model_summary(ctx: Context, o: dict):
    return ctx.table(pd.read_csv(ctx.files["model_summary"]), o["name"], "model summary")


def _class_counts(ctx: Context, o: dict):
    s = ctx.split()
    counts = s.groupby(["split", "class"]).size().unstack(fill_value=0)
    counts = counts.reindex([x for x in ("train", "val", "test") if x in counts.index])
    table = counts.reset_index().rename_axis(None, axis=1)
    paths = ctx.table(table, o["name"], "images per class and split")
    fig, ax = plt.subplots(figsize=(4.5, 3))
    counts.T.rename(index=ctx.label).plot.bar(ax=ax, rot=0)
    ax.set_ylabel("images")
    ax.set_xlabel("class")
    ax.set_title(f"{ctx.paper}: images per class")
    for cont in ax.containers:
        ax.bar_label(cont, fontsize=7)
    return paths + ctx.figure(fig, o["name"])


def _sample_grid(ctx: Context, o: dict):
    s = ctx.split()
    label, n, size, split = o["label"], int(o.get("n", 25)), int(o.get("size", 128)), o.get("split", "train")
    pool = s[(s["class"] == label) & (s["split"] == split)]
    if pool.empty:
        raise ValueError(f"output {o['name']}: no {split} image of class {label!r}; classes are "
                         f"{sorted(s['class'].unique())}")
    rng = np.random.default_rng(int(o.get("seed", 0)))
    pick = pool.iloc[np.sort(rng.choice(len(pool), size=min(n, len(pool)), replace=False))]
    side = int(np.ceil(np.sqrt(n)))
    fig, axes = plt.subplots(side, side, figsize=(side * 1.3, side * 1.3))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, path in zip(axes.ravel(), pick["png"]):
        with Image.open(path) as im:
            ax.imshow(np.asarray(im.convert("L").resize((size, size), Image.BILINEAR)), cmap="gray", vmin=0, vmax=255)
    fig.suptitle(f"{ctx.paper}: {ctx.label(label)} ({split}, {size}x{size})")
    fig.tight_layout()
    return ctx.figure(fig, o["name"])


def _intensity_histogram(ctx: Context, o: dict):
    s = ctx.split()
    part = s[s["split"] == o.get("split", "train")]
    row = part.iloc[int(o.get("index", 0)) % len(part)]
    with Image.open(row["png"]) as im:
        arr = np.asarray(im.convert("L"))
    fig, (a, b) = plt.subplots(1, 2, figsize=(7.5, 3))
    a.imshow(arr, cmap="gray", vmin=0, vmax=255)
    a.set_title(f"{row['image_id']} ({ctx.label(row['class'])})", fontsize=7)
    a.axis("off")
    b.hist(arr.ravel(), bins=64, range=(0, 255), color="0.3")
    b.set_xlabel("pixel intensity")
    b.set_ylabel("pixels")
    fig.suptitle(f"{ctx.paper}: pixel-intensity histogram")
    fig.tight_layout()
    return ctx.figure(fig, o["name"])


MASK_NOTES = {"ellipse": "instance masks are ellipses inscribed in the RSNA boxes",
              "box": "instance masks are the RSNA boxes filled"}


def _metrics_table(ctx: Context, o: dict):
    rows, shapes = [], set()
    for exp in o.get("experiments") or [o.get("experiment")]:
        m = json.loads(Path(ctx.all_files[exp]["metrics"]).read_text())
        if m.get("mask_shape"):
            shapes.add(m["mask_shape"])
        row = {"experiment": (o.get("row_labels") or {}).get(exp, exp)}
        for col, path in o["columns"].items():
            v = lookup(m, path)
            row[col] = v if isinstance(v, str) else float(v) if isinstance(v, (int, float)) else None
        rows.append(row)
    caption = o.get("caption", "metrics")
    if shapes:  # a detection table: say how its ground truth was made
        caption += " (" + "; ".join(MASK_NOTES[s] for s in sorted(shapes)) + ": the paper drew them by hand)"
    return ctx.table(pd.DataFrame(rows), o["name"], caption)


def _roc_curve(ctx: Context, o: dict):
    from sklearn.metrics import RocCurveDisplay

    split = o.get("split", "test")
    pred = pd.read_csv(ctx.files["predictions"])
    pred = pred[pred["split"] == split]
    positive = [c for c in pred.columns if c.startswith("prob_")][-1]
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    RocCurveDisplay.from_predictions(pred["target"], pred[positive], ax=ax, name=ctx.label(positive[5:]))
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8)
    ax.set_title(f"{ctx.paper}: ROC ({split})")
    return ctx.figure(fig, o["name"])


def _equalization(ctx: Context, o: dict):
    from ..preprocessing import equalize

    split = o.get("split", "test")
    table = ctx.split()
    table = table[(table["split"] == split) & ((table["class"] == o["label"]) if o.get("label") else True)]
    if table.empty:
        which = f" of class {o['label']!r}" if o.get("label") else ""
        raise ValueError(f"output {o['name']}: no {split} image{which}")
    png = table.iloc[min(o.get("index", 0), len(table) - 1)]["png"]
    img = np.asarray(Image.open(png).convert("L"))
    if o.get("size"):
        img = np.asarray(Image.fromarray(img).resize((o["size"], o["size"]), Image.BILINEAR))
    method = o.get("method", "global")
    eq = equalize(img, method)
    fig, axes = plt.subplots(2, 2, figsize=(6.4, 5.6), gridspec_kw={"height_ratios": [3, 1.4]})
    for col, (im, title) in enumerate([(img, "a) original"), (eq, f"b) equalised ({method})")]):
        axes[0, col].imshow(im, cmap="gray", vmin=0, vmax=255)
        axes[0, col].set_title(title)
        axes[0, col].axis("off")
        ax = axes[1, col]
        ax.hist(im.ravel(), bins=64, range=(0, 255), color="0.4")
        ax2 = ax.twinx()
        hist = np.bincount(im.ravel(), minlength=256)
        ax2.plot(np.cumsum(hist) / hist.sum(), color=OKABE_ITO[3], lw=1)  # the cumulative histogram
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("cumulative fraction", color=OKABE_ITO[3])
        ax.set_xlabel("intensity")
        ax.set_yticks([])
    fig.tight_layout()
    return ctx.figure(fig, o["name"])


def _detections(files: dict, coco_id: int, min_score: float) -> tuple[list, list]:
    from ..annotation import decode

    gt = json.loads(Path(files["annotations_test"]).read_text())
    res = json.loads(Path(files["predictions"]).read_text())
    true = [decode(a["segmentation"]) for a in gt["annotations"] if a["image_id"] == coco_id]
    pred = [decode(r["segmentation"]) for r in res if r["image_id"] == coco_id and r["score"] >= min_score]
    return true, pred


def _mask_overlay(ctx: Context, o: dict):
    per = pd.read_csv(ctx.files["per_image"])
    pos = per[per["n_true"] > 0].sort_values(["image_iou", "image_id"], kind="stable").reset_index(drop=True)
    if pos.empty:
        raise ValueError(f"output {o['name']}: no test image with opacities")
    pick = o.get("pick", "median")
    row = pos.iloc[{"best": len(pos) - 1, "worst": 0, "median": len(pos) // 2}[pick]]
    m = ctx.metrics()
    true, pred = _detections(ctx.files, int(row["coco_id"]), m["score_threshold"])
    img = np.asarray(Image.open(row["png"]).convert("L"))
    t = np.any(true, axis=0) if true else np.zeros(img.shape, bool)
    p = np.any(pred, axis=0) if pred else np.zeros(img.shape, bool)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
    overlay = np.stack([img] * 3, -1).astype(float) / 255 * 0.6
    # the paper's green union and red intersection, in Okabe & Ito's bluish green and vermilion,
    # which readers with a red-green colour-vision deficiency still tell apart
    green, red = (np.array(to_rgb(c)) for c in (OKABE_ITO[2], OKABE_ITO[3]))
    overlay[t | p] = overlay[t | p] * 0.4 + green * 0.6
    overlay[t & p] = overlay[t & p] * 0.4 + red * 0.6
    for ax, (im, title) in zip(axes, [(t, "a) annotated mask"), (p, "b) predicted mask"),
                                      (overlay, "c) union (green), intersection (red)")]):
        ax.imshow(im if im.ndim == 3 else im, cmap=None if im.ndim == 3 else "gray")
        ax.set_title(title, fontsize="small")
        ax.axis("off")
    fig.suptitle(f"{ctx.paper}: image IoU {row['image_iou']:.3f} ({pick} of {len(pos)} test images with opacities)",
                 fontsize="small")
    fig.tight_layout()
    return ctx.figure(fig, o["name"])


def _iou_distribution(ctx: Context, o: dict):
    exps = o.get("experiments") or [o.get("experiment")]
    labels = o.get("row_labels") or {}
    data = [pd.read_csv(ctx.all_files[e]["per_image"])["image_iou"].dropna().to_numpy() for e in exps]
    names = [labels.get(e, e) for e in exps]
    fig, (a, b) = plt.subplots(1, 2, figsize=(7.5, 3.2))
    for x, n in zip(data, names):
        a.hist(x, bins=np.linspace(0, 1, 21), histtype="step", lw=1.5,
               label=f"{n} (mean {x.mean():.3f}, sd {x.std():.3f})" if len(x) else n)
    a.set_xlabel("per-image IoU")
    a.set_ylabel("test images")
    a.set_title("a) distribution")
    a.legend(fontsize="x-small")
    b.boxplot(data, tick_labels=names)
    b.set_ylabel("per-image IoU")
    b.set_xlabel("experiment")
    b.set_title("b) box plot")
    fig.tight_layout()
    return ctx.figure(fig, o["name"])


def _detection_confusion(ctx: Context, o: dict):
    from sklearn.metrics import ConfusionMatrixDisplay

    exps = o.get("experiments") or [o.get("experiment")]
    labels = o.get("row_labels") or {}
    names = [ctx.label(n) for n in o.get("class_names", ["healthy", "pneumonia"])]
    fig, axes = plt.subplots(1, len(exps), figsize=(3.1 * len(exps), 3.0), squeeze=False)
    for ax, e in zip(axes[0], exps):
        im = json.loads(Path(ctx.all_files[e]["metrics"]).read_text())["image"]
        cm = np.array([[im["tn"], im["fp"]], [im["fn"], im["tp"]]])
        ConfusionMatrixDisplay(cm, display_labels=names).plot(ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(labels.get(e, e), fontsize="small")
    fig.tight_layout()
    return ctx.figure(fig, o["name"])


OUTPUTS: dict[str, Callable[[Context, dict], list[Path]]] = {
    "equalization": _equalization,
    "mask_overlay": _mask_overlay,
    "iou_distribution": _iou_distribution,
    "detection_confusion": _detection_confusion,
    "metrics_table": _metrics_table,
    "roc_curve": _roc_curve,
    "classification_report": _classification_report,
    "confusion_matrix": _confusion_matrix,
    "learning_curves": _learning_curves,
    "history": _history,
    "model_summary": _model_summary,
    "class_counts": _class_counts,
    "sample_grid": _sample_grid,
    "intensity_histogram": _intensity_histogram,
}


def _register_study_outputs() -> None:
    from .study import OUTPUTS as study_outputs

    OUTPUTS.update(study_outputs)


_register_study_outputs()


def publish_paper(paper: str, paper_cfg: dict, inputs: dict, out_dir, style: dict | None = None,
                  scale: str = "demo", captions: dict | None = None) -> list[Path]:
    """Write every output of ``paper_cfg['outputs']`` and the comparison into ``out_dir`` (replaced whole).

    ``captions`` (:func:`medrepro.publish.html.captions`; computed from the config when not given)
    go to ``captions.json``, which the HTML report reads.

    ``inputs`` maps experiment -> {"metrics", "history", "model_summary", "split"} paths.
    """
    out_dir = Path(out_dir)
    from ..provenance import record, short

    note = scale_note(scale)
    prov = record(paper_cfg)
    line = short(prov)
    published = yaml.safe_load(Path(paper_cfg["published"]).read_text())
    labels = paper_cfg.get("class_labels", {})
    default_exp = paper_cfg["experiments"][0]
    written: list[Path] = []
    with atomic_dir(out_dir) as tmp:
        for o in paper_cfg.get("outputs", []):
            exp = o.get("experiment", default_exp)
            for e in [exp] + list(o.get("experiments") or []):
                if e not in inputs:
                    raise ValueError(f"papers.{paper}.outputs {o['name']}: experiment {e!r} is not one of the "
                                     f"paper's experiments {list(inputs)}")
            if exp not in inputs:
                raise ValueError(f"papers.{paper}.outputs {o['name']}: experiment {exp!r} is not one of the "
                                 f"paper's experiments {list(inputs)}")
            ctx = Context(paper, inputs[exp], labels, style, note, tmp, inputs, line, experiment=exp,
                          layouts={x["name"]: x["layout"] for x in paper_cfg.get("outputs", []) if x.get("layout")})
            written += OUTPUTS[o["kind"]](ctx, o)
        comps, results = [], {}
        metrics_all = {exp: json.loads(Path(inputs[exp]["metrics"]).read_text()) for exp in paper_cfg["experiments"]}
        compare = [{**c, "experiment": c.get("experiment", default_exp)} for c in paper_cfg.get("compare", [])]
        extra, skipped = expand_table_comparisons(paper_cfg.get("compare_tables", []), published, metrics_all,
                                                  where=f"papers.{paper}.compare_tables")
        seen = {c["published"] for c in compare}
        for r in extra:   # a value an explicit row already compares is not compared twice
            if r["published"] not in seen:
                seen.add(r["published"])
                compare.append(r)
        for exp in paper_cfg["experiments"]:
            metrics = metrics_all[exp]
            results[exp] = metrics.get("provenance")
            comp = comparison_table(metrics, published, [c for c in compare if c["experiment"] == exp],
                                    where=f"papers.{paper}.compare", scale=scale)
            comp.insert(0, "experiment", exp)
            comps.append(comp)
        ctx = Context(paper, {}, labels, style, note, tmp, provenance=line)
        written += ctx.table(pd.concat(comps, ignore_index=True), "comparison", "published vs reproduced")
        cov = coverage_table(published, compare, paper_cfg.get("not_compared", [])
                             + [{"published": p, "reason": r, "detail": d} for p, r, d in skipped])
        n_done = int((cov["status"] == "compared").sum())
        written += ctx.table(cov, "published_values",
                             f"every transcribed number: {n_done} of {len(cov)} set beside a reproduced value")
        if paper_cfg.get("headline"):
            for h in paper_cfg["headline"]:
                if h["experiment"] not in inputs:
                    raise ValueError(f"papers.{paper}.headline {h['metric']!r}: experiment {h['experiment']!r} is not "
                                     f"one of the paper's experiments {list(inputs)}")
            metrics_by_exp = {e: json.loads(Path(inputs[e]["metrics"]).read_text())
                              for e in {h["experiment"] for h in paper_cfg["headline"]}}
            written += ctx.table(headline_table(metrics_by_exp, paper_cfg["headline"]), "headline",
                                 "headline metrics against chance (the most frequent class of the same test set)")
        write_json(tmp / "provenance.json", {"publish": prov, "experiments": results})
        written.append(tmp / "provenance.json")
        if captions is None:
            from .html import captions as make_captions
            captions = make_captions(paper_cfg, published)
        write_json(tmp / "captions.json", captions)
        written.append(tmp / "captions.json")
        if paper_cfg.get("departures"):
            written += ctx.table(departures_table(paper_cfg["departures"]), "departures",
                                 "where this reproduction departs from the paper")
        incons = published.get("inconsistencies", [])
        write_text(tmp / "inconsistencies.md", "# Inconsistencies in the published paper\n\n"
                   + "".join(f"- {x}\n" for x in incons)
                   + (f"\n{published['note']}\n" if published.get("note") else ""))
        written = [out_dir / p.relative_to(tmp) for p in written]
    return written


def report(papers: dict, paper_dirs: dict, out_md, scale: str = "demo", audit_dirs: dict | None = None,
           leakage_dir=None, repeats_dir=None) -> None:
    """The reproduction report: every paper's comparison table, the audit of its published tables
    (``audit_dirs``: :func:`medrepro.publish.audit.write_audit`'s folders), the leakage audit
    (``leakage_dir``: :func:`medrepro.leakage.write_leakage`'s folder) and where its outputs are."""
    audits = {name: json.loads((Path(d) / "summary.json").read_text()) for name, d in (audit_dirs or {}).items()}
    lines = ["# medrepro reproduction report", "", f"_{scale_note(scale)}_", "",
             "Each comparison row gives the reproduced value's 95 % interval (`ci_low`, `ci_high`: a percentile "
             "bootstrap over the test images, resampled by patient where patient ids exist; `bootstrap` in the "
             "config) and a verdict: the published value inside or outside that interval, or why the two are not "
             "comparable. Values read off a training curve or a selection have no interval. Binary AUCs also carry "
             "DeLong's interval in their `metrics.json` (`ci_delong`).", ""]
    if audits:
        lines += ["## Audit of the published tables", "",
                  "Arithmetic each paper's own tables must satisfy, checked on the transcribed numbers alone "
                  "(`medrepro.publish.audit`; what relates to what is declared under `audit` in each paper's YAML): F1 "
                  "against precision and recall, accuracy against the correct and total counts, correct + incorrect "
                  "= total, parts against totals, macro averages against the per-class rows, split fractions "
                  "against the counts, the same quantity printed twice, and binary scores against one confusion "
                  "matrix of the stated size (mlscorecheck). A value passes when it lies within half a unit of its "
                  "last printed digit. Each paper's section lists what does not hold; every check is in "
                  "`audit/<paper>/checks.csv`.", "",
                  pd.DataFrame([{"paper": n, "checks": a["checks"], "inconsistent": a["inconsistent"]}
                                for n, a in audits.items()]).to_markdown(index=False), ""]
    if repeats_dir is not None and (Path(repeats_dir) / "repeats.md").is_file():
        lines += ["## Seed variation", "",
                  "Headline metrics of experiments rerun with other training seeds (`repeats` in the config): the "
                  "spread says how much of a difference from the published value one run can show by chance.", "",
                  (Path(repeats_dir) / "repeats.md").read_text(), ""]
    if leakage_dir is not None:
        ld = Path(leakage_dir)
        lines += ["## Leakage audit", "",
                  "For every experiment's and study's split: patients in more than one split (the split's own "
                  "audit), and pictures on both sides of a split, byte-identical or near-duplicates (perceptual "
                  "hash, `medrepro.leakage`); datasets known to reuse one another are compared with each other. "
                  "Nothing is removed: the pairs are in `leakage/audit/pairs.csv`.", "",
                  (ld / "leakage.md").read_text(), ""]
        if (ld / "planted.md").is_file():
            lines += ["The demo's synthetic stand-ins plant copies for the audit to find:", "",
                      (ld / "planted.md").read_text(), ""]
    for name, cfg in papers.items():
        d = Path(paper_dirs[name])
        lines += [f"## {name}: {cfg.get('title', '')}", ""]
        comp = d / "tables" / "comparison.md"
        if comp.is_file():
            lines += [comp.read_text(), ""]
        cov_csv = d / "tables" / "published_values.csv"
        if cov_csv.is_file():
            cov = pd.read_csv(cov_csv)
            done = cov[cov["status"] == "compared"]
            rest = cov[cov["status"] != "compared"].groupby("reason", sort=False).size()
            others = ("The others: " + "; ".join(f"{n} — {reason}" for reason, n in rest.items()) + ". "
                      if len(rest) else "")
            lines += [f"**Published values: {len(done)} of {len(cov)} transcribed numbers are compared above.** "
                      + others + "Every value and its status: `tables/published_values.csv`.", ""]
        head = d / "tables" / "headline.csv"
        if head.is_file():
            h = pd.read_csv(head)
            below = h[h["above chance"] != "yes"]
            lines += ["### Learning check: headline metrics against chance", "",
                      (f"**{len(below)} of {len(h)} at or below chance: " + ", ".join(
                          f"{r.experiment} ({r.metric})" for r in below.itertuples()) + ".**" if len(below)
                       else f"All {len(h)} above chance."), "", (d / "tables" / "headline.md").read_text(), ""]
        dep = d / "tables" / "departures.md"
        if dep.is_file():
            lines += ["### Departures from the paper", "", dep.read_text(), ""]
        if cfg.get("not_produced"):
            lines += ["### Not produced", ""] + [f"- `{x['name']}`: {x['reason']}" for x in cfg["not_produced"]] + [""]
        inc = d / "inconsistencies.md"
        if inc.is_file():
            lines += [inc.read_text().replace("# Inconsistencies", "### Inconsistencies"), ""]
        if name in audits:
            a = audits[name]
            lines += [f"### Audit of the published tables: {a['inconsistent']} of {a['checks']} checks do not hold",
                      ""]
            if a["inconsistent"]:
                lines += [(Path(audit_dirs[name]) / "findings.md").read_text(), ""]
        files = sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file())
        lines += ["Outputs: " + ", ".join(f"`{p}`" for p in files), ""]
    lines += provenance_section(paper_dirs)
    write_text(out_md, "\n".join(lines))


def provenance_section(paper_dirs: dict) -> list[str]:
    """The report's last section: which commit, config, versions and machine made each result
    (from each paper's ``provenance.json``); results of more than one commit are said first."""
    from ..provenance import record

    rows = []
    for name, d in paper_dirs.items():
        f = Path(d) / "provenance.json"
        if not f.is_file():
            continue
        prov = json.loads(f.read_text())
        for exp, p in [("(tables)", prov["publish"])] + list(prov["experiments"].items()):
            p = p or {}
            trained = p.get("trained_on") or {}
            rows.append({"paper": name, "result": exp, "commit": (p.get("commit") or "-")[:12],
                         "uncommitted changes": {True: "yes", False: "no"}.get(p.get("dirty"), "-"),
                         "config": p.get("config_sha256") or "-", "torch": (p.get("versions") or {}).get("torch", "-"),
                         "trained on": " ".join(x for x in (trained.get("device"), trained.get("gpu")) if x
                                                and x != "None") or "-",
                         "threads": trained.get("threads") or p.get("threads") or "-"})
    now = record()
    head = ["## Provenance", "", f"Report written at commit {(now['commit'] or 'none (no git checkout)')[:12]}"
            + (" with uncommitted changes" if now["dirty"] else "") + "; python " + now["versions"]["python"]
            + ", " + ", ".join(f"{k} {v}" for k, v in now["versions"].items() if k != "python") + ".", ""]
    if not rows:
        return head
    table = pd.DataFrame(rows)
    commits = sorted(set(table["commit"]) - {"-"})
    if len(commits) > 1:
        head += [f"**The results come from {len(commits)} commits ({', '.join(commits)}): rerun to make them "
                 "consistent.**", ""]
    return head + [table.to_markdown(index=False), ""]
