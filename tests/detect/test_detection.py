"""Annotation round trips and the Mask R-CNN paper's metrics on cases with known answers."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pycocotools.coco import COCO

from medrepro.detect.annotation import box_to_mask, boxes_from_coco, coco_from_table, via_v1_from_table
from medrepro.detect.preprocessing import equalize
from medrepro.detect.scores import (
    SCORE_GRID,
    coco_ap,
    mask_iou_matrix,
    max_f1_threshold,
    paper_image_metrics,
    paper_metrics,
    rsna_image_score,
    rsna_score,
    score_threshold_sweep,
)


def _table():
    return pd.DataFrame({
        "image_id": ["a", "b", "c"], "png": ["a.png", "b.png", "c.png"], "width": [64, 64, 80], "height": [64, 48, 60],
        "boxes": [json.dumps([[4, 5, 20, 30], [30, 10, 12, 8]]), "[]", json.dumps([[0, 0, 80, 60]])],
    })


def test_boxes_masks_coco_boxes_round_trip(tmp_path):
    t = _table()
    coco = coco_from_table(t, "box")
    assert boxes_from_coco(coco) == {"a": [[4, 5, 20, 30], [30, 10, 12, 8]], "b": [], "c": [[0, 0, 80, 60]]}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    c = COCO(str(path))  # pycocotools loads it
    assert len(c.getAnnIds()) == 3 and c.annToMask(c.loadAnns(1)[0]).sum() == 20 * 30
    assert c.loadAnns(1)[0]["area"] == 600


def test_ellipse_masks_fit_their_boxes():
    m = box_to_mask([10, 8, 21, 15], 40, 50, "ellipse")
    ys, xs = np.nonzero(m)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (10, 31, 8, 23)
    assert 0.7 < m.sum() / (21 * 15) < np.pi / 4 + 0.05  # an ellipse fills pi/4 of its box
    boxes = boxes_from_coco(coco_from_table(_table(), "ellipse"))
    assert np.allclose(boxes["a"][0], [4, 5, 20, 30])


def test_via_v1_export():
    via = via_v1_from_table(_table(), "ellipse")
    entry = via["a.png-1"]
    assert entry["filename"] == "a.png" and set(entry["regions"]) == {"0", "1"}
    assert entry["regions"]["0"]["shape_attributes"] == {"name": "ellipse", "cx": 14, "cy": 20, "rx": 10, "ry": 15}
    assert via["b.png-1"]["regions"] == {}


def _rect(x, y, w, h, size=100):
    return box_to_mask([x, y, w, h], size, size)


def test_paper_metrics_hand_made_cases():
    # pneumonia image: one opacity found exactly, one found at IoU 0.3 -> TP 1, FN 1; the IoU-0.3
    # detection lies on a real opacity, so it is no FP under the paper's definition ("detections
    # that did not exist in the image"); image IoU 0.65
    a = paper_image_metrics([_rect(0, 0, 10, 10), _rect(50, 50, 20, 10)],
                            [_rect(0, 0, 10, 10), _rect(50, 50, 6, 10)])
    assert (a["tp"], a["fn"], a["fp"]) == (1, 1, 0)
    strict = paper_image_metrics([_rect(0, 0, 10, 10), _rect(50, 50, 20, 10)],
                                 [_rect(0, 0, 10, 10), _rect(50, 50, 6, 10)], false_positive="unmatched")
    assert (strict["tp"], strict["fn"], strict["fp"]) == (1, 1, 1)
    assert a["image_iou"] == pytest.approx((1 + 0.3) / 2) and a["image_class"] == "TP"
    b = paper_image_metrics([_rect(10, 10, 10, 10)], [_rect(60, 60, 5, 5)])  # missed, and a detection elsewhere
    assert (b["tp"], b["fn"], b["fp"], b["image_iou"], b["image_class"]) == (0, 1, 1, 0.0, "FN")
    c = paper_image_metrics([], [_rect(0, 0, 5, 5)])  # healthy with a detection
    d = paper_image_metrics([], [])  # healthy, nothing detected
    assert (c["image_class"], c["fp"], d["image_class"]) == ("FP", 1, "TN")
    e = paper_image_metrics([_rect(0, 0, 10, 10)], [_rect(0, 0, 10, 5), _rect(0, 5, 10, 5)])  # split in two halves
    assert (e["tp"], e["fn"], e["fp"], e["image_iou"]) == (1, 0, 0, 0.5) and e["image_class"] == "TP"
    m = paper_metrics([a, b, c, d, e])
    assert m["opacity"] == {"tp": 2, "fp": 2, "fn": 2, "precision": 2 / 4, "recall": 2 / 4,
                            "f1": pytest.approx(0.5)}
    assert (m["image"]["tp"], m["image"]["fp"], m["image"]["fn"], m["image"]["tn"]) == (2, 1, 1, 1)
    assert m["image"]["accuracy"] == pytest.approx(3 / 5)
    ious = np.array([0.65, 0.0, 0.5])
    assert m["iou_mean"] == pytest.approx(ious.mean()) and m["iou_std"] == pytest.approx(ious.std())


def test_mask_iou_matrix_by_pycocotools_equals_pixel_counts_for_arrays_and_rle():
    """pycocotools' RLE IoU equals |A & B| / |A | B| counted on the pixels, from arrays and from
    COCO RLE (bytes or JSON's str counts); empty unions give 0."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(3)
    true = [rng.random((37, 29)) < p for p in (0.2, 0.5)] + [np.zeros((37, 29), bool)]
    pred = [rng.random((37, 29)) < p for p in (0.1, 0.4, 0.7)] + [np.zeros((37, 29), bool)]
    want = np.array([[(t & q).sum() / (t | q).sum() if (t | q).any() else 0.0 for q in pred] for t in true])
    assert mask_iou_matrix(true, pred) == pytest.approx(want, abs=1e-12)
    rle = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in pred]
    as_json = [{**r, "counts": r["counts"].decode("ascii")} for r in rle]
    assert mask_iou_matrix(true, as_json) == pytest.approx(want, abs=1e-12)
    assert mask_iou_matrix(true[:1], rle[:1]).shape == (1, 1) and mask_iou_matrix([], rle).shape == (0, 4)


def test_rsna_metric_hand_made_cases():
    box = [[10, 10, 20, 20]]
    assert rsna_image_score(box, box, [0.9]) == 1.0
    # IoU 0.5 exactly: a hit for t = 0.40, 0.45 only (hit means IoU > t) -> 2 of 8 thresholds
    assert rsna_image_score([[0, 0, 20, 20]], [[0, 0, 10, 20]], [0.9]) == pytest.approx(2 / 8)
    assert rsna_image_score([], box, [0.5]) == 0.0  # predictions on an image without opacity
    assert rsna_image_score([], [], []) is None  # left out
    assert rsna_image_score([], [], [], empty="one") == 1.0
    assert rsna_image_score([[0, 0, 10, 10], [50, 50, 10, 10]], [[0, 0, 10, 10]], [0.9]) == 0.5
    # confidence order: the confident half-box takes the GT at low thresholds, the exact one later
    two = rsna_image_score([[0, 0, 20, 20]], [[0, 0, 20, 20], [0, 0, 12, 20]], [0.2, 0.9])
    # t=0.40..0.55: the 0.9 box (IoU 0.6) matches, the exact one is an FP -> 1/2; t>=0.6: the exact one matches -> 1/2
    assert two == pytest.approx(0.5)
    assert rsna_score([(box, box, [1.0]), ([], [], []), ([], box, [0.3])]) == pytest.approx(0.5)


def test_coco_ap_by_pycocotools():
    t = _table()
    gt = coco_from_table(t, "box")
    perfect = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"]]
    assert coco_ap(gt, perfect, "bbox")["AP"] == pytest.approx(1.0)
    # every box shifted to IoU 0.6: a hit at IoU 0.5, a miss at 0.75
    shifted = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        dx = w * (1 - 0.6) / (1 + 0.6)  # overlap w - dx, union w + dx -> IoU 0.6
        shifted.append({"image_id": a["image_id"], "category_id": 1, "bbox": [x + dx, y, w, h], "score": 0.9})
    ap = coco_ap(gt, shifted, "bbox")
    assert ap["AP50"] == pytest.approx(1.0) and ap["AP75"] == pytest.approx(0.0)


def test_global_equalisation_is_equation_1():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(90, 20, (64, 80)), 0, 255).astype(np.uint8)
    out = equalize(img, "global")
    counts = np.bincount(img.ravel(), minlength=256)
    cdf = np.cumsum(counts) / img.size  # T(r_k) = sum_{j<=k} n_j / n
    assert np.array_equal(out, np.rint(255 * cdf[img]).astype(np.uint8))
    clahe = equalize(img, "clahe")
    assert clahe.dtype == np.uint8 and clahe.std() > img.std()
    with pytest.raises(ValueError, match="equalisation"):
        equalize(img, "gamma")


def test_augmentation_keeps_image_masks_and_boxes_aligned():
    from medrepro.detect.preprocessing import detection_augmentation

    boxes = [[20, 30, 40, 24], [90, 60, 20, 40]]
    masks = [box_to_mask(b, 128, 160) for b in boxes]
    img = (np.maximum(masks[0], masks[1]) * 200).astype(np.uint8)
    t = detection_augmentation([
        {"name": "HorizontalFlip", "params": {"p": 1.0}},
        {"name": "Affine", "params": {"rotate": [15, 15], "shear": [5, 5], "scale": [1.1, 1.1],
                                      "translate_percent": [0.05, 0.05], "p": 1.0}},
    ], seed=3)
    out = t(image=img, masks=masks, bboxes=boxes, labels=[1, 2])
    assert len(out["bboxes"]) == 2 and list(out["labels"]) == [1, 2]
    for m, b in zip(out["masks"], out["bboxes"]):
        ys, xs = np.nonzero(m)
        mask_box = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert np.allclose(mask_box, b, atol=2.5), (mask_box, b)
    union = np.maximum(out["masks"][0], out["masks"][1]).astype(bool)
    bright = out["image"] > 100
    assert (bright & union).sum() / (bright | union).sum() > 0.95


def test_score_threshold_sweep_equals_the_metrics_of_the_kept_detections():
    """The sweep (IoUs computed once) against the paper's metrics recomputed from the masks of the
    detections kept at each threshold; max_f1_threshold takes the best F1, ties to the higher score."""
    rng = np.random.default_rng(3)
    images = []
    for _ in range(12):
        true, pred, scores = [], [], []
        for _ in range(int(rng.integers(0, 3))):
            m = np.zeros((40, 40), np.uint8)
            y, x = rng.integers(0, 30, 2)
            m[y:y + 10, x:x + 10] = 1
            true.append(m)
            shifted = np.roll(m, int(rng.integers(-4, 5)), axis=int(rng.integers(0, 2)))  # a detection of it
            pred.append(shifted)
            scores.append(float(rng.uniform(0.2, 0.9)))
        for _ in range(int(rng.integers(0, 3))):  # detections anywhere
            m = np.zeros((40, 40), np.uint8)
            y, x = rng.integers(0, 34, 2)
            m[y:y + 6, x:x + 6] = 1
            pred.append(m)
            scores.append(float(rng.uniform(0.0, 0.6)))
        images.append((true, pred, np.array(scores)))
    sweep = score_threshold_sweep([(mask_iou_matrix(t, p), s) for t, p, s in images], 0.45, "no_overlap")
    assert [r["score_threshold"] for r in sweep] == SCORE_GRID.tolist()
    for r in sweep:
        t = r["score_threshold"]
        direct = paper_metrics([paper_image_metrics(tr, [m for m, sc in zip(pr, s) if sc >= t], 0.45)
                                for tr, pr, s in images])["opacity"]
        assert {k: r[k] for k in direct} == pytest.approx(direct), t
    best = max(r["f1"] for r in sweep)
    assert max_f1_threshold(sweep) == max(r["score_threshold"] for r in sweep if r["f1"] == best)
    assert max_f1_threshold([{"score_threshold": 0.1, "f1": 0.5}, {"score_threshold": 0.3, "f1": 0.5},
                             {"score_threshold": 0.5, "f1": 0.2}]) == 0.3
