"""Tables and figures of staged studies (``studies:``), registered in :data:`medrepro.publish.outputs.OUTPUTS`.

=========================== ======= ===================================================================
kind                        writes  options
=========================== ======= ===================================================================
``study_split_counts``      table   ``experiments`` (studies): images per class and split
``study_runs``              table   ``experiment`` or ``experiments``, ``stage`` (1, 2), ``best_per``
                                    (backbone), ``split`` (test): one row per run, the paper's columns
``stage_comparison``        table   ``experiments``, ``stage`` (3, 4): stage 2's choice (a) vs the stage (b)
``stage_per_class``         table   ``experiments``, ``stage``: per-class precision/recall/F1, a vs b
``study_best``              table   ``experiments``: the best configuration per dataset
``fine_tune_parameters``    table   ``experiments``: parameters, trainable frozen and when fine-tuning
``batch_size_bars``         figure  ``experiment``: recall/precision/F1/accuracy per backbone and batch size
``lr_curve``                figure  ``experiments``: test metrics against the learning rate (stage 2)
``stage_confusion``         figure  ``experiments``, ``stage``: confusion matrices, stage 2 vs the stage
``study_learning_curves``   figure  ``experiments``, ``metrics``: the stage-2 choice's curves per dataset
``prediction_examples``     figure  ``experiment``, ``n``: test images with true/predicted class and
                                    probability, correct and wrong (the best stage's predictions)
``augmentation_examples``   figure  ``experiments``, ``n``: one image and ``n`` augmented versions
=========================== ======= ===================================================================

Columns follow the paper: macro-averaged recall, precision, F1, accuracy and the counts of
correct and incorrect test images.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from ..figures import RIGHT, WRONG
from ..tables import full_number

COLUMNS = ["recall", "precision", "f1", "accuracy", "correct", "incorrect", "total"]
NAMES = {"vgg16": "VGG-16", "vgg19": "VGG-19", "resnet50": "ResNet-50", "inception_v3": "Inception-V3",
         "efficientnet_b4": "EfficientNet-B4"}


def _studies(ctx, o) -> list[str]:
    return o.runs


def _metrics(ctx, st) -> dict:
    return json.loads(Path(ctx.all_files[st]["metrics"]).read_text())


def _split_counts(ctx, o):
    rows = []
    for st in _studies(ctx, o):
        m = _metrics(ctx, st)
        for split, counts in m["split_counts"].items():
            rows.append({"dataset": m["label"], "split": split, **counts, "total": sum(counts.values())})
    return ctx.table(pd.DataFrame(rows).fillna(""), o.name, o.caption or "images per class and split")


def _runs(ctx, o):
    split, stage = o.split or "test", o.stage or 1
    frames = []
    for st in _studies(ctx, o):
        runs = pd.read_csv(ctx.all_files[st][f"stage{stage}_runs"])
        if o.best_per == "backbone":
            sel = _metrics(ctx, st)["stage1"]["best_per_backbone"]
            runs = runs[[int(r.batch_size) == sel[r.backbone]["batch_size"] for r in runs.itertuples()]]
        df = runs[["backbone", "batch_size", "lr", "epochs_run"] + [f"{split}_{c}" for c in COLUMNS]].copy()
        df.columns = [c.replace(f"{split}_", "") for c in df.columns]
        df.insert(0, "dataset", _metrics(ctx, st)["label"])
        df["backbone"] = df["backbone"].map(lambda b: NAMES.get(b, b))
        df["lr"] = df["lr"].map(full_number)  # 0.00001, not 0.000 at three decimals
        frames.append(df)
    what = {1: "batch size (stage 1)", 2: "learning rate (stage 2)"}.get(stage, f"stage {stage}")
    return ctx.table(pd.concat(frames, ignore_index=True), o.name, f"{what}, {split} split")


def _after_stage(m: dict, stage) -> int:
    """The 'after' stage of a comparison: 3, 4, or ``best`` (the final configuration's stage)."""
    return int(m["best"]["stage"]) if stage == "best" else int(stage)


STAGE_WHAT = {3: "before (a) and after (b) augmentation", 4: "before (a) and after (b) fine-tuning",
              "best": "before (a, stage 2) and after (b) augmentation and fine-tuning (the final configuration)"}


def _stage_comparison(ctx, o):
    stage, rows = o.stage, []
    for st in _studies(ctx, o):
        m = _metrics(ctx, st)
        after = _after_stage(m, stage)
        for tag, k in (("a (stage 2)", 2), (f"b (stage {after})", after)):
            t = m[f"stage{k}"]["test"]
            rows.append({"dataset": m["label"], "model": tag, **{c: t[c] for c in COLUMNS}})
    return ctx.table(pd.DataFrame(rows), o.name, o.caption or f"{STAGE_WHAT[stage]}, test split")


def _class_counts(t: dict, classes: list[str]) -> dict:
    """Per class: images classified correctly (the diagonal), incorrectly and in all (its row)."""
    cm = np.array(t["confusion_matrix"])
    return {c: (int(cm[i, i]), int(cm[i].sum() - cm[i, i]), int(cm[i].sum())) for i, c in enumerate(classes)}


def _stage_per_class(ctx, o):
    """Tables B.5/B.6: per class and on average (P/T), precision/recall/F1, accuracy (the split's,
    as the thesis prints it on every row), correct, incorrect and total, a = stage 2, b = after."""
    stage, rows = o.stage, []
    for st in _studies(ctx, o):
        m = _metrics(ctx, st)
        ta, tb = m["stage2"]["test"], m[f"stage{_after_stage(m, stage)}"]["test"]
        ca, cb = _class_counts(ta, m["classes"]), _class_counts(tb, m["classes"])
        for c in m["classes"]:
            rows.append({"dataset": m["label"], "class": c,
                         **{f"{k}_{x}": t["per_class"][c][k] for k in ("precision", "recall", "f1")
                            for x, t in (("a", ta), ("b", tb))},
                         "accuracy_a": ta["accuracy"], "accuracy_b": tb["accuracy"],
                         "correct_a": ca[c][0], "correct_b": cb[c][0], "incorrect_a": ca[c][1],
                         "incorrect_b": cb[c][1], "total": ca[c][2]})
        rows.append({"dataset": m["label"], "class": "P/T (average / total)",
                     **{f"{k}_{x}": t[k] for k in ("precision", "recall", "f1") for x, t in (("a", ta), ("b", tb))},
                     "accuracy_a": ta["accuracy"], "accuracy_b": tb["accuracy"], "correct_a": ta["correct"],
                     "correct_b": tb["correct"], "incorrect_a": ta["incorrect"], "incorrect_b": tb["incorrect"],
                     "total": ta["total"]})
    return ctx.table(pd.DataFrame(rows), o.name, f"per class, {STAGE_WHAT[stage]}, test split")


def _best(ctx, o):
    rows = []
    for st in _studies(ctx, o):
        m = _metrics(ctx, st)
        b = m["best"]
        rows.append({"dataset": m["label"], "model": NAMES.get(b["model"], b["model"]), "batch_size": b["batch_size"],
                     "learning_rate": full_number(b["learning_rate"]),
                     "augmentation": "yes" if b["augmentation"] else "no",
                     "fine_tuning": "yes" if b["fine_tuning"] else "no", "accuracy": b["accuracy"],
                     "chosen_by": b["chosen_by"]})
        for key, alt in b.items():  # what selecting on the other split would have chosen (both reported)
            if key.startswith("if_selected_on_") and alt.get("stage1") and alt.get("stage2"):
                s1, s2 = alt["stage1"], alt["stage2"]
                same = (s1["backbone"], s1["batch_size"]) == (b["model"], b["batch_size"])
                rows.append({"dataset": m["label"], "model": NAMES.get(s1["backbone"], s1["backbone"]),
                             "batch_size": s1["batch_size"],
                             "learning_rate": (full_number(s2["lr"]) if s2["backbone"] == s1["backbone"]
                                               else "(not run)"),
                             "augmentation": "yes" if alt["stage"] == 3 else "no",
                             "fine_tuning": "yes" if alt["stage"] == 4 else "no",
                             "accuracy": alt["accuracy"] if same else None,
                             "chosen_by": key[len("if_selected_on_"):] + " (alternative: stages 2-4 ran on the "
                                                                     "choice above)"})
    return ctx.table(pd.DataFrame(rows), o.name, o.caption or "best configuration per dataset, and what "
                                                                  "selecting on the other split picks")


def _parameters(ctx, o):
    """Every backbone's total and trainable (frozen backbone) parameters, as the thesis reports them
    for all three, and the fine-tuning counts of the selected one."""
    rows = []
    for st in _studies(ctx, o):
        m = _metrics(ctx, st)
        p = json.loads(Path(ctx.all_files[st]["stage4_parameters"]).read_text())
        sel = m["stage2"]["selected"]["backbone"]
        for b, n in m["parameters"].items():
            rows.append({"dataset": m["label"], "model": NAMES.get(b, b), "total": n["total"],
                         "total_keras_convention": n["keras_total"], "trainable_frozen": n["trainable"],
                         "trainable_fine_tuning": p.get("trainable_fine_tuning") if b == sel else None,
                         "selected": "yes" if b == sel else "no"})
    return ctx.table(pd.DataFrame(rows), o.name, "parameters per backbone: total, trainable with the backbone "
                                                     "frozen and (the selected model) when fine-tuning")


def _bars(ctx, o):
    st = o.experiment
    runs = pd.read_csv(ctx.all_files[st]["stage1_runs"])
    label = _metrics(ctx, st)["label"]
    metrics = ["recall", "precision", "f1", "accuracy"]
    fig, axes = plt.subplots(2, 2, figsize=(7.0, 5.0), sharey=True)
    axes = axes.ravel()
    backbones = list(dict.fromkeys(runs["backbone"]))
    sizes = sorted(runs["batch_size"].unique())
    width = 0.8 / len(sizes)
    for k, (ax, met) in enumerate(zip(axes, metrics)):
        for j, bs in enumerate(sizes):
            vals = [runs[(runs.backbone == b) & (runs.batch_size == bs)][f"test_{met}"].mean() for b in backbones]
            ax.bar(np.arange(len(backbones)) + j * width - 0.4 + width / 2, vals, width, label=f"batch {bs}")
        ax.set_xticks(range(len(backbones)), [NAMES.get(b, b) for b in backbones], fontsize="small")
        ax.set_title(met)
        ax.set_xlabel("model")
        if k % 2 == 0:  # the left column's (the rows share their y axis)
            ax.set_ylabel("test score")
        ax.set_ylim(0, 1.05)
    # the legend below the plots, off the bars
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(sizes), fontsize="small",
               frameon=False)
    fig.suptitle(f"{label}: test metrics per model and batch size (stage 1)", fontsize="medium")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return ctx.figure(fig, o.name)


def _lr_curve(ctx, o):
    studies = _studies(ctx, o)
    fig, axes = plt.subplots(1, len(studies), figsize=(2.5 * len(studies), 2.9), squeeze=False)
    for ax, st in zip(axes[0], studies):
        runs = pd.read_csv(ctx.all_files[st]["stage2_runs"]).sort_values("lr")
        for met in ("recall", "precision", "f1", "accuracy"):
            ax.plot(runs["lr"], runs[f"test_{met}"], marker="o", label=met)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("test score")
        ax.set_ylim(0, 1.05)
        sel = _metrics(ctx, st)["stage2"]["selected"]
        ax.set_title(f"{_metrics(ctx, st)['label']}: {NAMES.get(sel['backbone'], sel['backbone'])}, "
                     f"batch {sel['batch_size']}", fontsize="small")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return ctx.figure(fig, o.name)


def _stage_confusion(ctx, o):
    from sklearn.metrics import ConfusionMatrixDisplay

    stage, studies = o.stage or 4, _studies(ctx, o)
    fig, axes = plt.subplots(len(studies), 2, figsize=(7.2, 3.3 * len(studies)), squeeze=False)
    for row, st in zip(axes, studies):
        m = _metrics(ctx, st)
        for ax, k, tag in ((row[0], 2, "before"), (row[1], stage, "after")):
            cm = np.array(m[f"stage{k}"]["test"]["confusion_matrix"])
            ConfusionMatrixDisplay(cm, display_labels=[ctx.label(c) for c in m["classes"]]).plot(
                ax=ax, colorbar=False, cmap="Blues")
            # class names slanted from their tick, so that long ones neither meet nor cross the axis label
            plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor", fontsize="small")
            plt.setp(ax.get_yticklabels(), fontsize="small")
            ax.set_title(f"{m['label']}: {tag} (stage {k})", fontsize="small")
        row[1].set_ylabel("")   # the left matrix names the rows (same classes, same order)
        row[1].set_yticklabels([])
    fig.tight_layout()
    return ctx.figure(fig, o.name)


def _study_curves(ctx, o):
    studies, metrics = _studies(ctx, o), list(o.metrics or ("loss",))
    fig, axes = plt.subplots(1, len(studies), figsize=(2.5 * len(studies), 2.9), squeeze=False)
    for ax, st in zip(axes[0], studies):
        m = _metrics(ctx, st)
        sel = m["stage2"]["selected"]
        hist = pd.read_csv(ctx.all_files[st]["stage2_history"])
        from ..specs import lr_key

        h = hist[hist["run"] == lr_key(sel["lr"])]
        for met in metrics:
            ax.plot(h["epoch"], h[met], label=f"train {met}")
            ax.plot(h["epoch"], h[f"val_{met}"], label=f"validation {met}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(" / ".join(metrics))
        ax.set_title(f"{m['label']}: {NAMES.get(sel['backbone'], sel['backbone'])}, lr {sel['lr']:g}",
                     fontsize="small")
    # one legend below the plots (the same lines in each), off the curves
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=2 * len(metrics),
               fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return ctx.figure(fig, o.name)


def _prediction_examples(ctx, o):
    st, n = o.experiment, o.n or 8
    m = _metrics(ctx, st)
    pred = pd.read_csv(ctx.all_files[st][f"stage{m['best']['stage']}_predictions"], dtype={"image_id": str})
    pred = pred[pred["split"] == "test"]
    split = ctx.all_files[st]["split"]
    pngs = pd.read_csv(split, dtype={"image_id": str}).set_index("image_id")["png"]
    right, wrong = pred[pred["target"] == pred["pred"]], pred[pred["target"] != pred["pred"]]
    pick = pd.concat([right.head(n - min(len(wrong), n // 2)), wrong.head(n // 2)])
    cols = min(4, max(len(pick), 1))
    rows = (len(pick) + cols - 1) // cols or 1
    # constrained layout leaves room for each image's two-line title above it (tight_layout let
    # the titles of the second row run into the images of the first)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.7 * rows), squeeze=False, layout="constrained")
    names = m["classes"]
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), pick.itertuples()):
        ax.imshow(Image.open(pngs[r.image_id]).convert("RGB"))
        p = getattr(r, f"prob_{names[r.pred]}")
        ok = r.target == r.pred
        ax.set_title(f"true {ctx.label(names[r.target])}\npred {ctx.label(names[r.pred])} ({p:.2f})",
                     fontsize="x-small", color=RIGHT if ok else WRONG)
    fig.suptitle(f"{m['label']}: test predictions (stage {m['best']['stage']})", fontsize="small")
    return ctx.figure(fig, o.name)


def _augmentation_examples(ctx, o):
    from ..data import build_augmentation

    studies, n = _studies(ctx, o), o.n or 4
    fig, axes = plt.subplots(len(studies), n + 1, figsize=(1.8 * (n + 1), 1.9 * len(studies)), squeeze=False)
    for row, st in zip(axes, studies):
        m = _metrics(ctx, st)
        table = pd.read_csv(ctx.all_files[st]["split"])
        img = np.asarray(Image.open(table[table["split"] == "train"]["png"].iloc[0]).convert("RGB"))
        aug = build_augmentation(m.get("augment"), o.seed or 0)
        row[0].imshow(img)
        row[0].set_title(f"{m['label']}: original", fontsize="small")
        for k in range(n):
            row[k + 1].imshow(aug(image=img)["image"] if aug else img)
            row[k + 1].set_title(f"augmented {k + 1}", fontsize="small")
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    return ctx.figure(fig, o.name)


OUTPUTS = {
    "study_split_counts": _split_counts,
    "study_runs": _runs,
    "stage_comparison": _stage_comparison,
    "stage_per_class": _stage_per_class,
    "study_best": _best,
    "fine_tune_parameters": _parameters,
    "batch_size_bars": _bars,
    "lr_curve": _lr_curve,
    "stage_confusion": _stage_confusion,
    "study_learning_curves": _study_curves,
    "prediction_examples": _prediction_examples,
    "augmentation_examples": _augmentation_examples,
}
