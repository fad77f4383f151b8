"""Workflow steps of detection experiments (``task: detect``): files in, files out.

annotate -> train -> predict -> evaluate, whatever the backend: both backends read the
COCO JSON written by :func:`annotate` and write a COCO results list, which :func:`evaluate`
scores with the paper's metrics, the RSNA challenge metric and pycocotools' AP.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import read_csv, write_csv, write_json
from ..specs import DetectSpec, RunSpec, run_spec
from . import backends
from .annotation import coco_from_table, via_v1_from_table
from .scores import coco_ap, paper_image_metrics, paper_metrics, rsna_image_score

SPLITS = ("train", "val", "test")


def annotate(split_csv, mask_shape: str, out_dir) -> dict:
    """COCO instance JSON (RLE masks) and a VIA v1 export per split, from the split's boxes, the
    masks of shape ``mask_shape`` (``detect.mask_shape``)."""
    table = read_csv(split_csv)
    shape = mask_shape
    out_dir = Path(out_dir)
    counts = {}
    for s in SPLITS:
        part = table[table["split"] == s]
        coco = coco_from_table(part, shape)
        write_json(out_dir / f"{s}.json", coco)
        write_json(out_dir / f"via_{s}.json", via_v1_from_table(part, shape))
        counts[s] = {"images": len(coco["images"]), "opacities": len(coco["annotations"])}
    print(f"annotations ({shape} masks): {counts}", file=sys.stderr)
    return counts


def _load(path) -> dict:
    return json.loads(Path(path).read_text())


def train(annotations_dir, experiment: Mapping, model_out, history_out, summary_out, checkpoint=None,
          weights: str | None = None) -> None:
    """Train the experiment's detector with its backend (:mod:`medrepro.detect.backends`)."""
    spec = run_spec(experiment)
    backend = backends.get(spec.model.detector.backend)
    backend.train(Path(annotations_dir), spec, model_out, history_out, summary_out, checkpoint, weights)


def predict(annotations_dir, model_path, experiment: Mapping, out, out_val=None) -> None:
    """COCO results of the test split (``out``) and of the validation split (``out_val``: what a
    score threshold is chosen on)."""
    spec = run_spec(experiment)
    backend = backends.get(spec.model.detector.backend)
    for split, path in (("test", out), ("val", out_val)):
        if path is not None:
            write_json(path, backend.predict(model_path, _load(Path(annotations_dir) / f"{split}.json"), spec))


def _iou_and_scores(gt: dict, results: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image of ``gt``: the IoU matrix of its true masks and all its predicted masks, and their scores."""
    from .scores import mask_iou_matrix

    pred: dict[int, list] = {}
    for r in results:
        pred.setdefault(r["image_id"], []).append(r)
    true: dict[int, list] = {}
    for a in gt["annotations"]:
        true.setdefault(a["image_id"], []).append(a)
    out = []
    for im in gt["images"]:
        p = pred.get(im["id"], [])
        iou = mask_iou_matrix([a["segmentation"] for a in true.get(im["id"], [])], [r["segmentation"] for r in p])
        out.append((iou, np.array([r["score"] for r in p], dtype=float)))
    return out


def choose_score_threshold(annotations_dir, results_val, detect: DetectSpec) -> tuple[float, dict]:
    """The score threshold ``detect.score_threshold`` names (a number, or ``max_f1_val``: the score on
    :data:`~medrepro.detect.scores.SCORE_GRID` maximising the paper's opacity F1 on the
    validation split, ties to the higher score) and the record of the choice: the rule, the
    validation sweep and what ``max_f1_val`` picks whatever the rule."""
    from .scores import max_f1_threshold, score_threshold_sweep

    rule = detect.score_threshold
    sweep = []
    if results_val is not None:
        gt = _load(Path(annotations_dir) / "val.json")
        sweep = score_threshold_sweep(_iou_and_scores(gt, _load(results_val)), detect.iou_threshold,
                                      detect.false_positive)
    best = max_f1_threshold(sweep) if sweep and any(r["tp"] + r["fn"] for r in sweep) else None
    if rule == "max_f1_val":
        if best is None:
            raise ValueError("detect.score_threshold is 'max_f1_val', but the validation split has no opacity "
                             "to choose it on")
        chosen = best
    else:
        chosen = float(rule)
    return chosen, {"rule": rule if isinstance(rule, str) else "fixed", "value": chosen, "max_f1_val": best,
                    "val_sweep": sweep}


def _per_image(gt: dict, kept: list, d) -> tuple[pd.DataFrame, list[dict]]:
    """One row per test image (the paper's counts and IoU, RSNA's score) of the ``kept`` predictions,
    and the paper's per-image metrics."""
    true: dict[int, list] = {}
    for a in gt["annotations"]:
        true.setdefault(a["image_id"], []).append(a)
    pred: dict[int, list] = {}
    for r in kept:
        pred.setdefault(r["image_id"], []).append(r)
    rows, per = [], []
    for im in gt["images"]:
        t, p = true.get(im["id"], []), pred.get(im["id"], [])
        m = paper_image_metrics([a["segmentation"] for a in t], [r["segmentation"] for r in p],
                                d.iou_threshold, d.false_positive)
        rsna = rsna_image_score([a["bbox"] for a in t], [r["bbox"] for r in p], [r["score"] for r in p])
        per.append(m)
        rows.append({"image_id": im["medrepro_id"], "coco_id": im["id"], "class": im.get("medrepro_class"),
                     "png": im["file_name"], "n_true": m["n_true"], "n_pred": m["n_pred"], "tp": m["tp"],
                     "fp": m["fp"], "fn": m["fn"], "image_iou": m["image_iou"], "image_class": m["image_class"],
                     "rsna_score": rsna})
    return pd.DataFrame(rows), per


def _run_row(spec: RunSpec, train_coco: dict, seconds: float) -> dict:
    """What the run was, as the paper's Table 1 describes its experiments."""
    m, t, d = spec.model, spec.train, spec.detect
    cls = d.train_classes
    return {"backend": m.detector.backend, "backbone": f"{m.detector.backbone}-FPN",
            "input_size": f"{m.input_size[0]}x{m.input_size[1]}", "batch_size": t.batch_size, "lr": t.lr,
            "optimizer": t.optimizer, "epochs": t.epochs, "steps_per_epoch": t.steps_per_epoch,
            "train_images": sum(1 for im in train_coco["images"] if not cls or im.get("medrepro_class") in cls),
            "train_classes": "+".join(cls) if cls else "all", "augmentation": "yes" if spec.augment else "no",
            "training_time_h": seconds / 3600, "mask_shape": d.mask_shape, "equalization": d.equalization}


def _say(metrics: dict, table: pd.DataFrame, threshold: float, choice: dict) -> None:
    ious = table["image_iou"].dropna()
    print(f"score threshold {threshold} ({choice['rule']}; max F1 on validation at {choice['max_f1_val']})",
          file=sys.stderr)
    print(f"test: {len(table)} images; IoU {np.mean(ious) if len(ious) else float('nan'):.3f}; opacity recall "
          f"{metrics['opacity']['recall']:.3f} precision {metrics['opacity']['precision']:.3f}; image accuracy "
          f"{metrics['image']['accuracy']:.3f}; RSNA {metrics['rsna']['score']}; "
          f"mask AP {metrics['coco']['segm']['AP']:.3f}", file=sys.stderr)


def evaluate(annotations_dir, results_json, history_csv, experiment: Mapping, metrics_out, per_image_out, *,
             results_val=None, summary_csv=None, split_csv=None, bootstrap: dict | None = None) -> dict:
    """Per-image rows and the metrics: the paper's (IoU mean/std, Tables 2 and 3), RSNA's, COCO AP, at
    the score threshold of :func:`choose_score_threshold` (on ``results_val``, the validation split's).
    With ``bootstrap``, ``ci`` holds percentile intervals of the paper's metrics, the test images
    resampled by patient (ids from ``split_csv``)."""
    gt = _load(Path(annotations_dir) / "test.json")
    results = _load(results_json)
    spec = run_spec(experiment)
    d = spec.detect
    threshold, choice = choose_score_threshold(annotations_dir, results_val, d)
    table, per = _per_image(gt, [r for r in results if r["score"] >= threshold], d)
    metrics = paper_metrics(per)
    s = table["rsna_score"].dropna()
    metrics["rsna"] = {"score": float(s.mean()) if len(s) else None, "images_scored": int(len(s)),
                       "score_threshold": threshold}
    metrics["coco"] = {"segm": coco_ap(gt, results, "segm"), "bbox": coco_ap(gt, results, "bbox")}
    hist = pd.read_csv(history_csv)
    metrics["train"] = {"epochs_run": int(len(hist)), "iterations": int(hist["iterations"].iloc[-1]),
                        "seconds": float(hist["seconds"].sum()), "last": hist.iloc[-1].to_dict()}
    metrics["run"] = _run_row(spec, _load(Path(annotations_dir) / "train.json"), metrics["train"]["seconds"])
    metrics["test_images"] = {"total": len(table), "with_opacities": int((table["n_true"] > 0).sum())}
    metrics["iou_threshold"], metrics["score_threshold"] = d.iou_threshold, threshold
    metrics["score_threshold_choice"] = choice
    from ..provenance import record, runtime_from_summary

    metrics["provenance"] = record(experiment, runtime_from_summary(summary_csv))
    metrics["false_positive"], metrics["mask_shape"] = d.false_positive, d.mask_shape
    if bootstrap and bootstrap.get("n_resamples") and len(table):
        from ..uncertainty import bootstrap_by_patient

        rows = table.assign(image_iou=table["image_iou"].astype(object).where(table["image_iou"].notna(), None))
        metrics["ci"] = bootstrap_by_patient(rows, lambda r: paper_metrics(r.to_dict("records")), bootstrap,
                                             split_csv or None)
    write_csv(per_image_out, table)
    write_json(metrics_out, metrics)
    _say(metrics, table, threshold, choice)
    return metrics
