"""Figures, each saved as PNG (screen) and PDF (print) with one style.

The style (font size, dpi, formats) comes from the ``figures`` config key, so
figures can be regenerated for publication without retraining:
``snakemake --forcerun publish_paper``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from .io import atomic_path  # noqa: E402

DEFAULT_STYLE = {"dpi": 200, "formats": ["png", "pdf"], "font_size": 9, "layout": "natural",
                 "widths": {"single": 3.5, "double": 7.16}}

# Okabe & Ito (2008), "Color Universal Design": eight colours told apart under the common
# colour-vision deficiencies (https://jfly.uni-koeln.de/color/); matplotlib's default cycle has
# red and green side by side
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
RIGHT, WRONG = OKABE_ITO[0], OKABE_ITO[3]  # blue and vermilion: correct / incorrect


def apply_style(style: dict | None = None) -> dict:
    """Set matplotlib's style for every figure drawn after it (font size, the colour-blind-safe
    cycle, viridis for images without a meaning of their own, TrueType fonts embedded in PDF and
    PostScript).  Call it before drawing: a figure takes most settings when it is created."""
    from cycler import cycler

    s = {**DEFAULT_STYLE, **(style or {})}
    plt.rcParams.update({"font.size": s["font_size"], "axes.titlesize": s["font_size"] + 1,
                         "figure.titlesize": s["font_size"] + 1, "axes.labelsize": s["font_size"],
                         "axes.prop_cycle": cycler(color=OKABE_ITO), "image.cmap": "viridis",
                         "figure.dpi": 100, "savefig.bbox": "tight", "pdf.fonttype": 42, "ps.fonttype": 42})
    return s


def _text_artists(fig, extra: bool = False):
    """(owner axes or None, what, Text) of every visible, non-empty text of ``fig``: figure texts,
    titles, axis labels and the tick labels shown; with ``extra``, legends' and annotations' too."""
    out = [(None, f"figure text {t.get_text()[:30]!r}", t) for t in fig.texts]
    for k, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        named = [("title", ax.title), ("left title", ax._left_title), ("right title", ax._right_title),
                 ("x label", ax.xaxis.label), ("y label", ax.yaxis.label)]
        if ax.axison:   # tick labels drawn: those of a visible axis, at a position inside the view limits
            for what, axis, lim, i in (("x tick", ax.xaxis, ax.get_xlim(), 0), ("y tick", ax.yaxis, ax.get_ylim(), 1)):
                if not axis.get_visible():
                    continue
                lo, hi = sorted(lim)
                tol = 1e-9 * max(1.0, abs(hi - lo))
                named += [(what, t) for t in axis.get_ticklabels() if lo - tol <= t.get_position()[i] <= hi + tol]
        if extra:
            leg = ax.get_legend()
            named += [("legend", t) for t in (leg.get_texts() if leg is not None and leg.get_visible() else [])]
            named += [("text", t) for t in ax.texts]
        out += [(ax, f"axes {k} {what} {t.get_text()[:30]!r}", t) for what, t in named]
    # a figure's own legends (below its plots, say): their texts must not meet the footer note
    out += [(None, f"figure legend {t.get_text()[:30]!r}", t) for leg in fig.legends for t in leg.get_texts()]
    return [(ax, what, t) for ax, what, t in out if t.get_visible() and t.get_text().strip()]


def _texts(fig, renderer):
    """(owner axes or None, what, window bbox) of every visible, non-empty text of ``fig``."""
    return [(ax, what, t.get_window_extent(renderer)) for ax, what, t in _text_artists(fig)]


def text_overlaps(fig, pad: float = 1.0, *, drawn: bool = False) -> list[str]:
    """Texts of ``fig`` that overlap one another or another axes' plotting area (a title running
    into the row above, an axis label over its tick labels), as readable pairs; ``pad`` pixels of
    contact are allowed.  ``drawn``: the figure was drawn since its last change (no new draw)."""
    if not drawn:
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    items = _texts(fig, renderer)

    def hit(a, b):
        return (min(a.x1, b.x1) - max(a.x0, b.x0) > pad) and (min(a.y1, b.y1) - max(a.y0, b.y0) > pad)

    problems = []
    for i, (ax_i, what_i, box_i) in enumerate(items):
        for ax_j, what_j, box_j in items[i + 1:]:
            if hit(box_i, box_j):
                problems.append(f"{what_i} overlaps {what_j}")
        for k, other in enumerate(fig.axes):
            if other is not ax_i and other.get_visible() and (other.axison or other.images) \
                    and hit(box_i, other.get_window_extent(renderer)):
                problems.append(f"{what_i} overlaps the plotting area of axes {k}")
    return problems


MIN_FONT_PT = 5.0  # the smallest text a journal page should carry, at the column width the figure goes to


def legends_over_data(fig, *, drawn: bool = False) -> list[str]:
    """Legends drawn inside a plot over its data: any line vertex, scatter point or bar of that
    plot under the legend's box.  ``drawn``: as :func:`text_overlaps`."""
    if not drawn:
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    out = []
    for k, ax in enumerate(fig.axes):
        leg = ax.get_legend()
        if leg is None or not leg.get_visible():
            continue
        box = leg.get_window_extent(renderer)
        pts = [line.get_transform().transform(np.column_stack([line.get_xdata(orig=False),
                                                               line.get_ydata(orig=False)]).astype(float))
               for line in ax.get_lines() if line.get_visible() and len(line.get_xdata(orig=False))]
        pts += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections
                if hasattr(c, "get_offsets") and len(c.get_offsets()) and c.get_visible()]
        covered = sum(int(((p[:, 0] > box.x0) & (p[:, 0] < box.x1) & (p[:, 1] > box.y0) & (p[:, 1] < box.y1)).sum())
                      for p in pts if p.size)
        extents = [patch.get_window_extent(renderer) for patch in ax.patches if patch.get_visible()]
        covered += sum(1 for e in extents if e.width > 0 and e.height > 0 and e.overlaps(box))  # bars, boxes
        if covered:
            out.append(f"axes {k} legend covers {covered} data point(s) or bar(s)")
    return out


def small_fonts(fig, width: float | None, style: dict, minimum: float = MIN_FONT_PT, *,
                drawn: bool = False) -> list[str]:
    """Texts smaller than ``minimum`` points once the figure is at the width it goes to: ``width``
    when saved at a column width, else the journal column it would be scaled to (one column when
    at most 1.5 of its width, two otherwise).  ``drawn``: as :func:`text_overlaps`."""
    if not drawn:
        fig.canvas.draw()
    natural = fig.get_size_inches()[0]
    to = width or target_width(natural, style, "columns")
    scale = min(1.0, to / natural) if to else 1.0
    out, seen = [], set()
    for _, what, t in _text_artists(fig, extra=True):
        size = t.get_fontsize() * scale
        if size < minimum and (what, round(size, 1)) not in seen:
            seen.add((what, round(size, 1)))
            out.append(f"{what} is {size:.1f} pt at {to or natural:.2f} in wide (under {minimum} pt)")
    return out


def target_width(natural: float, style: dict, layout: str | None = None) -> float | None:
    """The width (inches) a figure drawn ``natural`` inches wide is saved at: None keeps it."""
    layout = layout or style.get("layout", "natural")
    widths = {**DEFAULT_STYLE["widths"], **(style.get("widths") or {})}
    if layout == "columns":
        layout = "single" if natural <= 1.5 * widths["single"] else "double"
    return widths.get(layout)


def unlabelled_axes(fig) -> list[str]:
    """Plots (axes drawn with their axis lines, colour bars aside) whose x or y axis shows tick
    labels but has no label saying what it measures."""
    out = []
    for k, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison or ax.get_label() == "<colorbar>":
            continue
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            shown = axis.get_visible() and any(t.get_visible() and t.get_text() for t in axis.get_ticklabels())
            if shown and not axis.get_label_text().strip():
                out.append(f"axes {k} ({ax.get_title()[:30]!r}) has no {name} label")
    return out


def layout_problems(fig, width: float | None, style: dict) -> list[str]:
    """Every layout check of a finished figure, on one draw: overlapping texts, unlabelled axes,
    legends over data and texts too small at the width it goes to (see :func:`small_fonts`)."""
    fig.canvas.draw()
    return (text_overlaps(fig, drawn=True) + unlabelled_axes(fig) + legends_over_data(fig, drawn=True)
            + small_fonts(fig, width, style, drawn=True))


def save_figure(fig, stem: str | Path, style: dict | None = None, note: str = "", provenance: str = "",
                layout: str | None = None) -> list[Path]:
    """Save ``fig`` as ``stem.<fmt>`` for every configured format; ``note`` goes in the footer,
    ``provenance`` in the file's metadata (PNG ``Software``, PDF and SVG ``Creator``).

    ``layout`` (or the style's): ``single``/``double`` saves it at that column width, its height
    scaled alike and its layout recomputed.  Texts that overlap each other or another plot are
    reported on stderr, naming the figure (:func:`text_overlaps`), as are axes without a label
    (:func:`unlabelled_axes`), legends over data (:func:`legends_over_data`) and texts too small
    at the column width the figure goes to (:func:`small_fonts`).
    """
    s = apply_style(style)
    width = target_width(fig.get_size_inches()[0], s, layout)
    if width:
        w, h = fig.get_size_inches()
        fig.set_size_inches(width, h * width / w)
        if fig.get_layout_engine() is None:   # a constrained layout redoes itself when drawn
            fig.tight_layout()
    if note:  # below everything already drawn (rotated tick labels included)
        fig.canvas.draw()
        if fig.get_layout_engine() is not None:   # freeze the layout: saving must not move the plots
            fig.set_layout_engine("none")           # onto the note placed below them
        renderer = fig.canvas.get_renderer()
        for leg in fig.legends:  # pinned in figure coordinates: a tight bbox on saving must not move them
            box = leg.get_window_extent(renderer)                  # down onto the note
            leg.set_bbox_to_anchor(((box.x0 + box.x1) / 2 / fig.bbox.width, box.y0 / fig.bbox.height),
                                   transform=fig.transFigure)
            leg.set_loc("lower center")
        if fig.legends:  # moved: draw again before measuring
            fig.canvas.draw()
        bottom = fig.get_tightbbox().y0 / fig.get_size_inches()[1]
        fig.text(0.01, bottom - 0.01, note, fontsize=max(s["font_size"] - 2, 5), color="0.35", ha="left", va="top")
    for problem in layout_problems(fig, width, s):
        print(f"figure {Path(stem).name}: {problem}", file=sys.stderr)
    paths = []
    for fmt in s["formats"]:
        p = Path(stem).with_suffix(f".{fmt}")
        with atomic_path(p) as tmp:
            key = "Software" if fmt == "png" else "Creator" if fmt in ("pdf", "svg") else None
            fig.savefig(tmp, format=fmt, dpi=s["dpi"], metadata={key: provenance} if key and provenance else None)
        paths.append(p)
    plt.close(fig)
    return paths


def confusion_matrix_figure(cm, class_names: list[str], title: str = "Confusion matrix"):
    """Counts and, below them, each true class's share (row percentages), coloured by the share:
    scikit-learn's ConfusionMatrixDisplay of the row-normalised matrix, its cell texts set to both."""
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(class_names), 1.0 + 1.0 * len(class_names)))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    disp = ConfusionMatrixDisplay(norm, display_labels=class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=30, im_kw={"vmin": 0, "vmax": 1})
    for (i, j), text in np.ndenumerate(disp.text_):
        text.set_text(f"{cm[i, j]}\n({norm[i, j]:.0%})")
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


def reliability_figure(target, proba, pred, title: str = "Reliability", bins: int | None = None):
    """Reliability diagram of the predicted class's probability (its confidence): observed accuracy
    against mean confidence per equal-width bin (scikit-learn's CalibrationDisplay, the bins of
    the expected calibration error), and below it how many images fall in each bin."""
    from sklearn.calibration import CalibrationDisplay

    from .metrics import ECE_BINS

    bins = bins or ECE_BINS
    target, pred, proba = np.asarray(target, int), np.asarray(pred, int), np.asarray(proba, float)
    conf = proba[np.arange(len(pred)), pred]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(3.8, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    CalibrationDisplay.from_predictions((pred == target).astype(int), conf, n_bins=bins, strategy="uniform",
                                        ax=ax, name="this model", ref_line=True)
    ax.set_xlabel("")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    hist.hist(conf, bins=np.linspace(0, 1, bins + 1), color="0.5")
    hist.set_xlabel("confidence (probability of the predicted class)")
    hist.set_ylabel("images")
    fig.tight_layout()
    return fig


FOREST_ROWS = 40  # rows per forest-plot figure


def forest_figure(comp: pd.DataFrame, title: str, confidence: float = 0.95):
    """Published against reproduced, a row per judged comparison row (``comp``: a comparison
    table with ``diff_low``/``diff_high``): the reproduced value with its interval (filled), the
    published one with its own (open; its error is what the difference's interval holds beyond
    the reproduced one's), the row's label coloured by its verdict."""
    from scipy import stats

    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    rows = comp.reset_index(drop=True)
    se_rep = (rows["ci_high"] - rows["ci_low"]) / (2 * z)
    se_diff = (rows["diff_high"] - rows["diff_low"]) / (2 * z)
    se_pub = np.sqrt(np.clip(se_diff ** 2 - se_rep ** 2, 0, None))
    colours = {"different": OKABE_ITO[3], "consistent": OKABE_ITO[2], "inconclusive": "0.35"}
    height = 1.3 + 0.25 * len(rows)
    fig, ax = plt.subplots(figsize=(6.5, height))
    y = np.arange(len(rows))[::-1]
    ax.errorbar(rows["reproduced"], y + 0.15, xerr=[rows["reproduced"] - rows["ci_low"],
                                                  rows["ci_high"] - rows["reproduced"]],
                fmt="o", ms=3.5, color=OKABE_ITO[0], lw=1, label="reproduced")
    ax.errorbar(rows["published"], y - 0.15, xerr=z * se_pub, fmt="D", ms=3.5, mfc="white", color="0.3", lw=1,
                label="published")
    labels = [f"{e}: {m}" if e else m for e, m in zip(rows.get("experiment", [""] * len(rows)), rows["metric"])]
    ax.set_yticks(y, labels)
    for tick, v in zip(ax.get_yticklabels(), rows["verdict"]):
        tick.set_color(colours.get(v, "black"))
    ax.set_ylim(-0.8, len(rows) - 0.2)
    ax.set_xlabel(f"value, with its {confidence:.0%} interval")
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylabel("comparison row")
    ax.set_title(title, fontsize="medium")
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1))  # the legend below the plot, off the data
    return fig


def learning_curves_figure(history: pd.DataFrame, title: str = "Learning curves",
                           metrics: tuple[str, ...] | list[str] = ("accuracy", "loss")):
    """Train vs validation per epoch, one panel per metric of the history."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3), squeeze=False)
    for ax, key in zip(axes[0], metrics):
        ax.plot(history["epoch"], history[key], "o-", ms=3, label="train")
        ax.plot(history["epoch"], history[f"val_{key}"], "s-", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def contact_sheet_figure(manifest: pd.DataFrame, title: str, per_class: int = 6, seed: int = 0, thumb: int = 160):
    """A grid of ``per_class`` converted images per label, with boxes and mask outlines drawn."""
    labels = sorted(manifest["label"].unique())
    rng = np.random.default_rng(seed)
    cols = per_class
    fig, axes = plt.subplots(len(labels), cols, figsize=(1.6 * cols, 1.75 * len(labels)), squeeze=False)
    for r, lab in enumerate(labels):
        sub = manifest[manifest["label"] == lab]
        pick = sub.iloc[np.sort(rng.choice(len(sub), size=min(cols, len(sub)), replace=False))] if len(sub) else sub
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(pick):
                continue
            row = pick.iloc[c]
            with Image.open(row["png"]) as im:
                arr = np.asarray(im)
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255)
            for x, y, w, h in json.loads(row.get("boxes") or "[]"):
                ax.add_patch(Rectangle((x, y), w, h, fill=False, ec="red", lw=1))
            if row.get("mask_png"):
                with Image.open(row["mask_png"]) as m:
                    mask = np.asarray(m) > 127
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors="yellow", linewidths=0.6)
            extra = f" [{row['labels']}]" if row.get("labels") else ""
            ax.set_title(f"{lab}{extra}"[:28], fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
