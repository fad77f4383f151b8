"""Detection metrics of the Mask R-CNN paper, the RSNA challenge metric and COCO AP.

Paper (``maskrcnn_opacity``, section "Métricas de desempeño"):

- **IoU** of a true opacity: pixel IoU (eq. 2) between its mask and the predicted instance
  it is matched to (0 when none).  Matching is one to one, greedy by IoU, highest first.
- **Per-image IoU** (eq. 4): the mean IoU over the image's true opacities; the test-set
  mean and population standard deviation of it are eqs. 3 and 5.
- **Opacity level** (Table 2): a true opacity matched with IoU > 0.45 is a TP, otherwise an
  FN ("opacities the system does not detect, or detects with an IoU below 0.45"); an FP is
  a detection "that did not exist in the image": one that overlaps no true opacity at all
  (``false_positive: no_overlap``, the paper's).  A detection on a real opacity at IoU <= 0.45
  counts as that opacity's FN only.  ``false_positive: unmatched`` counts, in addition, every
  detection not matched at IoU > 0.45 (the stricter object-detection convention).
- **Image level** (Table 3): a pneumonia image is a TP when its per-image IoU > 0.45, else an
  FN; a healthy image with any detection is an FP, with none a TN.

RSNA challenge (https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/overview/evaluation):
for t in 0.40:0.05:0.75, predictions sorted by
confidence are matched greedily to boxes with IoU > t; precision(t) = TP / (TP + FP + FN);
an image scores the mean over t; an image without boxes scores 0 with any prediction and
is left out without any (as public replicas do; ``empty="one"`` scores it 1 instead).
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

RSNA_THRESHOLDS = np.round(np.arange(0.40, 0.751, 0.05), 2)


def _rle(mask) -> dict:
    """COCO RLE of a mask given as an (H, W) array or as an RLE dict (JSON's str counts too)."""
    if isinstance(mask, dict):
        return {**mask, "counts": mask["counts"].encode("ascii")} if isinstance(mask["counts"], str) else mask
    return mask_utils.encode(np.asfortranarray(np.asarray(mask).astype(bool).astype(np.uint8)))


def mask_iou_matrix(true: list, pred: list) -> np.ndarray:
    """Pixel IoU between every true and every predicted mask, (T, P), by pycocotools on RLE
    (masks as (H, W) arrays or COCO RLE dicts; an empty union gives 0)."""
    if not true or not pred:
        return np.zeros((len(true), len(pred)))
    iou = mask_utils.iou([_rle(m) for m in pred], [_rle(m) for m in true], [0] * len(true))
    return np.asarray(iou, dtype=np.float64).reshape(len(pred), len(true)).T


def greedy_match(iou: np.ndarray) -> list[tuple[int, int, float]]:
    """One-to-one (true, pred, IoU) pairs, highest IoU first; pairs with IoU 0 are not made."""
    pairs, used_t, used_p = [], set(), set()
    order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0] if iou.size else []
    for t, p in order:
        if iou[t, p] <= 0:
            break
        if t not in used_t and p not in used_p:
            pairs.append((int(t), int(p), float(iou[t, p])))
            used_t.add(t)
            used_p.add(p)
    return pairs


def paper_image_metrics(true: list, pred: list, threshold: float = 0.45,
                        false_positive: str = "no_overlap") -> dict:
    """Per-image quantities of the paper's metrics (see the module docstring); masks as arrays or COCO RLE."""
    return image_metrics_from_iou(mask_iou_matrix(true, pred), threshold, false_positive)


def image_metrics_from_iou(iou: np.ndarray, threshold: float = 0.45, false_positive: str = "no_overlap") -> dict:
    """:func:`paper_image_metrics` from the (true, predicted) mask IoU matrix of one image."""
    if false_positive not in ("no_overlap", "unmatched"):
        raise ValueError(f"false_positive must be 'no_overlap' or 'unmatched', got {false_positive!r}")
    true, pred = range(iou.shape[0]), range(iou.shape[1])
    pairs = greedy_match(iou)
    per_true = np.zeros(len(true))
    for t, _, v in pairs:
        per_true[t] = v
    tp = int((per_true > threshold).sum())
    if false_positive == "unmatched":
        fp = len(pred) - len({p for _, p, v in pairs if v > threshold})
    else:  # detections touching no true opacity
        fp = int((iou.max(0) <= 0).sum()) if len(true) else len(pred)
    out = {"n_true": len(true), "n_pred": len(pred), "tp": tp, "fn": len(true) - tp,
           "fp": fp, "opacity_iou": per_true.tolist()}
    if len(true):
        out["image_iou"] = float(per_true.mean())
        out["image_class"] = "TP" if out["image_iou"] > threshold else "FN"
    else:
        out["image_iou"] = None
        out["image_class"] = "FP" if len(pred) else "TN"
    return out


SCORE_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def score_threshold_sweep(images: list[tuple[np.ndarray, np.ndarray]], iou_threshold: float = 0.45,
                          false_positive: str = "no_overlap", grid=SCORE_GRID) -> list[dict]:
    """The paper's opacity-level precision, recall and F1 at each detection score threshold of
    ``grid``, over ``images``: (IoU matrix of the true masks and all predicted masks, the
    predictions' scores) per image, so the masks are compared once."""
    rows = []
    for t in grid:
        per = [image_metrics_from_iou(iou[:, np.asarray(scores) >= t], iou_threshold, false_positive)
               for iou, scores in images]
        m = paper_metrics(per)["opacity"]
        rows.append({"score_threshold": float(t), **{k: m[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn")}})
    return rows


def max_f1_threshold(sweep: list[dict]) -> float:
    """The threshold of a :func:`score_threshold_sweep` with the highest F1 (ties: the higher threshold)."""
    best = max(sweep, key=lambda r: (r["f1"], r["score_threshold"]))
    return best["score_threshold"]


def paper_metrics(images: list[dict]) -> dict:
    """Aggregate :func:`paper_image_metrics` results over a test set (Tables 2 and 3, eqs. 3 and 5)."""
    def prf(tp, fp, fn):
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    tp, fp, fn = (sum(i[k] for i in images) for k in ("tp", "fp", "fn"))
    op, orr, of1 = prf(tp, fp, fn)
    cls = [i["image_class"] for i in images]
    c = {k: cls.count(k) for k in ("TP", "FP", "FN", "TN")}
    ip, ir, if1 = prf(c["TP"], c["FP"], c["FN"])
    ious = np.array([i["image_iou"] for i in images if i["image_iou"] is not None])
    return {
        "iou_mean": float(ious.mean()) if ious.size else None,
        "iou_std": float(ious.std(ddof=0)) if ious.size else None,  # eq. 5: population standard deviation
        "opacity": {"tp": tp, "fp": fp, "fn": fn, "precision": op, "recall": orr, "f1": of1},
        "image": {**{k.lower(): v for k, v in c.items()}, "precision": ip, "recall": ir, "f1": if1,
                  "accuracy": (c["TP"] + c["TN"]) / len(cls) if cls else 0.0,
                  # the accuracy of calling every image by the more frequent truth (opacity or none)
                  "majority_rate": max(c["TP"] + c["FN"], c["FP"] + c["TN"]) / len(cls) if cls else 0.0},
    }


def rsna_image_score(true_boxes, pred_boxes, scores, empty: str = "exclude") -> float | None:
    """The RSNA challenge score of one image (boxes as [x, y, w, h]); None when left out."""
    if empty not in ("exclude", "one"):
        raise ValueError(f"empty must be 'exclude' or 'one', got {empty!r}")
    n_t, n_p = len(true_boxes), len(pred_boxes)
    if n_t == 0:
        if n_p:
            return 0.0
        return None if empty == "exclude" else 1.0
    if n_p == 0:
        return 0.0

    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    pred = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)[order]
    true = np.asarray(true_boxes, dtype=np.float64).reshape(-1, 4)
    iou = np.asarray(mask_utils.iou(pred, true, [0] * n_t))  # box IoU.reshape(n_p, n_t)  # (P, T)
    precisions = []
    for t in RSNA_THRESHOLDS:
        matched, tp = set(), 0
        for p in range(n_p):
            cand = [(iou[p, g], g) for g in range(n_t) if g not in matched and iou[p, g] > t]
            if cand:
                matched.add(max(cand)[1])
                tp += 1
        fp, fn = n_p - tp, n_t - tp
        precisions.append(tp / (tp + fp + fn))
    return float(np.mean(precisions))


def rsna_score(images: list[tuple], empty: str = "exclude") -> float:
    """Mean of :func:`rsna_image_score` over ``(true_boxes, pred_boxes, scores)`` tuples."""
    s = [rsna_image_score(t, p, c, empty) for t, p, c in images]
    s = [v for v in s if v is not None]
    return float(np.mean(s)) if s else float("nan")


def coco_ap(gt: dict, results: list[dict], iou_type: str = "segm") -> dict:
    """COCO AP, AP50, AP75 of ``results`` (COCO results list) against ``gt`` (COCO JSON), by pycocotools."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = {k: v for k, v in gt.items() if k in ("images", "annotations", "categories", "info")}
        g.createIndex()
        d = g.loadRes(results) if results else COCO()
        ev = COCOeval(g, d, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": float(ev.stats[0]), "AP50": float(ev.stats[1]), "AP75": float(ev.stats[2])}
