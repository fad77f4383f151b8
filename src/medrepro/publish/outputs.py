"""The output kinds of classification and detection experiments (the studies' are in
:mod:`medrepro.publish.study`): a paper's tables and figures, from a list of outputs in config.

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
``intensity_histogram``     figure  ``index`` (0), ``split`` (train), ``size`` (as converted), ``bins`` (64): one image
                                    beside its histogram; ``size`` resizes it first (bilinear, as a notebook's
                                    loader does before its model: the intensities the model sees)
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

No paper is special-cased: a paper is the list of its outputs (:func:`medrepro.publish.paper.publish_paper`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from PIL import Image

from ..figures import OKABE_ITO, apply_style, confusion_matrix_figure, learning_curves_figure, save_figure
from ..io import read_csv
from ..metrics import report_table
from ..specs import OutputSpec
from ..tables import write_table
from .compare import lookup
from .study import OUTPUTS as STUDY_OUTPUTS


class Context:
    """What an output may read: one experiment's files, loaded on first use."""

    def __init__(self, paper: str, files: dict, labels: dict, style, note: str, out: Path, *, all_files=None,
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

    def table(self, df: pd.DataFrame, name: str, caption: str, tex_drop: tuple = ()) -> list[Path]:
        return write_table(df, self.out / "tables" / name, caption=f"{self.paper}: {caption}", note=self.note,
                           provenance=self.provenance, tex_drop=tex_drop)

    def figure(self, fig, name: str) -> list[Path]:
        return save_figure(fig, self.out / "figures" / name, self.style, self.note, self.provenance,
                           layout=self.layouts.get(name))


def _classification_report(ctx: Context, o: OutputSpec):
    m = ctx.metrics()[(o.split or "test")]
    return ctx.table(report_table(m, ctx.labels), o.name, f"classification report ({o.split or 'test'})")


def _confusion_matrix(ctx: Context, o: OutputSpec):
    split = o.split or "test"
    m = ctx.metrics()[split]
    names = [ctx.label(n) for n in m["class_names"]]
    return ctx.figure(confusion_matrix_figure(m["confusion_matrix"], names, f"{ctx.paper}: confusion matrix ({split})"),
                      o.name)


def _learning_curves(ctx: Context, o: OutputSpec):
    metrics = list(o.metrics or ("accuracy", "loss"))
    # named after the experiment where a paper has several (transfer_kermany's three figures shared one title)
    who = ctx.paper if ctx.experiment in (None, ctx.paper) else f"{ctx.paper}, {ctx.experiment}"
    return ctx.figure(learning_curves_figure(ctx.history(), f"{who}: learning curves", metrics), o.name)


def _history(ctx: Context, o: OutputSpec):
    return ctx.table(ctx.history(), o.name, "per-epoch training log")


def _model_summary(ctx: Context, o: OutputSpec):
    return ctx.table(pd.read_csv(ctx.files["model_summary"]), o.name, "model summary")


def _class_counts(ctx: Context, o: OutputSpec):
    s = ctx.split()
    counts = s.groupby(["split", "class"]).size().unstack(fill_value=0)
    counts = counts.reindex([x for x in ("train", "val", "test") if x in counts.index])
    table = counts.reset_index().rename_axis(None, axis=1)
    paths = ctx.table(table, o.name, "images per class and split")
    fig, ax = plt.subplots(figsize=(4.5, 3))
    counts.T.rename(index=ctx.label).plot.bar(ax=ax, rot=0)
    ax.set_ylabel("images")
    ax.set_xlabel("class")
    ax.set_title(f"{ctx.paper}: images per class")
    for cont in ax.containers:
        ax.bar_label(cont, fontsize=7)
    return paths + ctx.figure(fig, o.name)


def _sample_grid(ctx: Context, o: OutputSpec):
    s = ctx.split()
    label, n, size, split = o.label, (o.n or 25), (o.size or 128), (o.split or "train")
    pool = s[(s["class"] == label) & (s["split"] == split)]
    if pool.empty:
        raise ValueError(f"output {o.name}: no {split} image of class {label!r}; classes are "
                         f"{sorted(s['class'].unique())}")
    rng = np.random.default_rng(o.seed or 0)
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
    return ctx.figure(fig, o.name)


def _intensity_histogram(ctx: Context, o: OutputSpec):
    s = ctx.split()
    part = s[s["split"] == (o.split or "train")]
    row = part.iloc[(o.index or 0) % len(part)]
    with Image.open(row["png"]) as im:
        im = im.convert("L")
        if o.size:
            im = im.resize((o.size, o.size), Image.BILINEAR)
        arr = np.asarray(im)
    fig, (a, b) = plt.subplots(1, 2, figsize=(7.5, 3))
    a.imshow(arr, cmap="gray", vmin=0, vmax=255)
    a.set_title(f"{row['image_id']} ({ctx.label(row['class'])})", fontsize=7)
    a.axis("off")
    b.hist(arr.ravel(), bins=o.bins or 64, range=(0, 255), color="0.3")
    b.set_xlabel("pixel intensity")
    b.set_ylabel("pixels")
    fig.suptitle(f"{ctx.paper}: pixel-intensity histogram")
    fig.tight_layout()
    return ctx.figure(fig, o.name)


MASK_NOTES = {"ellipse": "instance masks are ellipses inscribed in the RSNA boxes",
              "box": "instance masks are the RSNA boxes filled"}


def _metrics_table(ctx: Context, o: OutputSpec):
    rows, shapes = [], set()
    for exp in o.runs:
        m = json.loads(Path(ctx.all_files[exp]["metrics"]).read_text())
        if m.get("mask_shape"):
            shapes.add(m["mask_shape"])
        row = {"experiment": (o.row_labels or {}).get(exp, exp)}
        for col, path in o.columns.items():
            v = lookup(m, path)
            row[col] = v if isinstance(v, str) else float(v) if isinstance(v, (int, float)) else None
        rows.append(row)
    caption = o.caption or "metrics"
    if shapes:  # a detection table: say how its ground truth was made
        caption += " (" + "; ".join(MASK_NOTES[s] for s in sorted(shapes)) + ": the paper drew them by hand)"
    return ctx.table(pd.DataFrame(rows), o.name, caption)


def _roc_curve(ctx: Context, o: OutputSpec):
    from sklearn.metrics import RocCurveDisplay

    split = o.split or "test"
    pred = pd.read_csv(ctx.files["predictions"])
    pred = pred[pred["split"] == split]
    positive = [c for c in pred.columns if c.startswith("prob_")][-1]
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    RocCurveDisplay.from_predictions(pred["target"], pred[positive], ax=ax, name=ctx.label(positive[5:]))
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=0.8)
    ax.set_title(f"{ctx.paper}: ROC ({split})")
    return ctx.figure(fig, o.name)


def _equalization(ctx: Context, o: OutputSpec):
    from ..detect.preprocessing import equalize

    split = o.split or "test"
    table = ctx.split()
    table = table[(table["split"] == split) & ((table["class"] == o.label) if o.label else True)]
    if table.empty:
        which = f" of class {o.label!r}" if o.label else ""
        raise ValueError(f"output {o.name}: no {split} image{which}")
    png = table.iloc[min(o.index or 0, len(table) - 1)]["png"]
    img = np.asarray(Image.open(png).convert("L"))
    if o.size:
        img = np.asarray(Image.fromarray(img).resize((o.size, o.size), Image.BILINEAR))
    method = o.method or "global"
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
    return ctx.figure(fig, o.name)


def _detections(files: dict, coco_id: int, min_score: float) -> tuple[list, list]:
    from ..detect.annotation import decode

    gt = json.loads(Path(files["annotations_test"]).read_text())
    res = json.loads(Path(files["predictions"]).read_text())
    true = [decode(a["segmentation"]) for a in gt["annotations"] if a["image_id"] == coco_id]
    pred = [decode(r["segmentation"]) for r in res if r["image_id"] == coco_id and r["score"] >= min_score]
    return true, pred


def _mask_overlay(ctx: Context, o: OutputSpec):
    per = pd.read_csv(ctx.files["per_image"])
    pos = per[per["n_true"] > 0].sort_values(["image_iou", "image_id"], kind="stable").reset_index(drop=True)
    if pos.empty:
        raise ValueError(f"output {o.name}: no test image with opacities")
    pick = o.pick or "median"
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
    return ctx.figure(fig, o.name)


def _iou_distribution(ctx: Context, o: OutputSpec):
    exps = o.runs
    labels = o.row_labels or {}
    data = [pd.read_csv(ctx.all_files[e]["per_image"])["image_iou"].dropna().to_numpy() for e in exps]
    names = [labels.get(e, e) for e in exps]
    fig, (a, b) = plt.subplots(1, 2, figsize=(7.5, 3.2))
    for x, n in zip(data, names):
        a.hist(x, bins=np.linspace(0, 1, 21), histtype="step", lw=1.5,
               label=f"{n} (mean {x.mean():.3f}, sd {x.std():.3f})" if len(x) else n)
    a.set_xlabel("per-image IoU")
    a.set_ylabel("test images")
    a.set_title("a) distribution")
    a.set_ylim(0, a.get_ylim()[1] * 1.6)  # headroom: the legend above the histograms, not over them
    a.legend(fontsize="x-small", loc="upper center")
    b.boxplot(data, tick_labels=names)
    b.set_ylabel("per-image IoU")
    b.set_xlabel("experiment")
    b.set_title("b) box plot")
    fig.tight_layout()
    return ctx.figure(fig, o.name)


def _detection_confusion(ctx: Context, o: OutputSpec):
    from sklearn.metrics import ConfusionMatrixDisplay

    exps = o.runs
    labels = o.row_labels or {}
    names = [ctx.label(n) for n in (o.class_names or ("healthy", "pneumonia"))]
    fig, axes = plt.subplots(1, len(exps), figsize=(3.1 * len(exps), 3.0), squeeze=False)
    for ax, e in zip(axes[0], exps):
        im = json.loads(Path(ctx.all_files[e]["metrics"]).read_text())["image"]
        cm = np.array([[im["tn"], im["fp"]], [im["fn"], im["tp"]]])
        ConfusionMatrixDisplay(cm, display_labels=names).plot(ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(labels.get(e, e), fontsize="small")
    fig.tight_layout()
    return ctx.figure(fig, o.name)


EXPERIMENT_OUTPUTS: dict[str, Callable[[Context, OutputSpec], list[Path]]] = {
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

# every output kind: the experiments' above and the studies' (medrepro.publish.study)
OUTPUTS: dict[str, Callable[[Context, OutputSpec], list[Path]]] = {**EXPERIMENT_OUTPUTS, **STUDY_OUTPUTS}
