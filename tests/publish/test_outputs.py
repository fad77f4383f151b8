"""Each output kind of experiments (:mod:`medrepro.publish.outputs`) on small files written here:
what a table holds and what a figure draws, checked against scikit-learn, NumPy and pandas."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score, roc_curve  # noqa: E402

from medrepro.detect.annotation import encode  # noqa: E402
from medrepro.detect.preprocessing import equalize  # noqa: E402
from medrepro.metrics import classification_metrics, prediction_table  # noqa: E402
from medrepro.publish.outputs import OUTPUTS, Context  # noqa: E402
from medrepro.specs import output_spec  # noqa: E402

NAMES = ["healthy", "pneumonia"]
LABELS = {"healthy": "Normal", "pneumonia": "Pneumonia"}


class Drawn(Context):
    """A context that keeps each figure open for the test, after writing its PNG and PDF."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.figures = {}

    def figure(self, fig, name):
        paths = super().figure(fig, name)
        self.figures[name] = fig
        return paths


@pytest.fixture
def exp(tmp_path):
    """One binary experiment's files: a split of 24 grey PNGs, test predictions, metrics, history
    and a model summary."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(24):
        split = ("train", "val", "test")[i % 3]
        cls = NAMES[(i // 3) % 2]
        arr = rng.integers(30, 200, (40, 48), dtype=np.uint8) // (1 + (cls == "pneumonia"))
        png = tmp_path / f"im{i:02d}.png"
        Image.fromarray(arr).save(png)
        rows.append({"image_id": f"im{i:02d}", "png": str(png), "class": cls, "label": NAMES.index(cls),
                     "split": split})
    split = pd.DataFrame(rows)
    split.to_csv(tmp_path / "split.csv", index=False)
    test = split[split["split"] == "test"]
    p1 = np.clip(test["label"].to_numpy() * 0.5 + rng.uniform(0, 0.6, len(test)), 0, 1)
    pred = prediction_table(test["image_id"], test["label"], np.stack([1 - p1, p1], 1), NAMES)
    pred.to_csv(tmp_path / "predictions.csv", index=False)
    (tmp_path / "metrics.json").write_text(json.dumps({"test": classification_metrics(pred, NAMES)}))
    pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.9, 0.6, 0.5], "accuracy": [0.5, 0.7, 0.8],
                  "val_loss": [1.0, 0.8, 0.7], "val_accuracy": [0.5, 0.6, 0.65],
                  "lr": [1e-3] * 3}).to_csv(tmp_path / "history.csv", index=False)
    pd.DataFrame({"layer": ["conv2d", "dense"], "output_shape": ["(32, 38, 46)", "(2,)"],
                  "parameters": [320, 130], "trainable": [320, 130]}).to_csv(tmp_path / "summary.csv", index=False)
    files = {k: tmp_path / f for k, f in (("split", "split.csv"), ("predictions", "predictions.csv"),
                                          ("metrics", "metrics.json"), ("history", "history.csv"),
                                          ("model_summary", "summary.csv"))}
    return tmp_path, files, split, pred


def _run(tmp_path, files, block, all_files=None, experiment="e1"):
    o = output_spec(block)
    ctx = Drawn("paper", files, LABELS, {"dpi": 40, "formats": ["png", "pdf"]}, "", tmp_path / "out",
                all_files=all_files or {experiment: files}, experiment=experiment)
    paths = OUTPUTS[o.kind](ctx, o)
    assert paths and all(p.is_file() and p.stat().st_size > 0 for p in paths)
    suffixes = sorted(p.suffix for p in paths)
    return ctx, suffixes


def _table(tmp_path, name):
    return pd.read_csv(tmp_path / "out" / "tables" / f"{name}.csv")


def test_every_experiment_kind_has_a_test_here():
    tested = {"classification_report", "confusion_matrix", "learning_curves", "history", "model_summary",
              "class_counts", "sample_grid", "intensity_histogram", "metrics_table", "roc_curve", "equalization",
              "mask_overlay", "iou_distribution", "detection_confusion"}
    experiment_kinds = {k for k, f in OUTPUTS.items() if f.__module__ == "medrepro.publish.outputs"}
    assert experiment_kinds == tested


def test_classification_report_is_scikit_learns(exp):
    root, files, _, pred = exp
    _, suffixes = _run(root, files, {"kind": "classification_report", "name": "t"})
    assert suffixes == [".csv", ".md", ".tex"]
    t = _table(root, "t").set_index("class")
    want = classification_report(pred["target"], pred["pred"], target_names=NAMES, output_dict=True, zero_division=0)
    for c in NAMES:
        for k in ("precision", "recall", "f1-score", "support"):
            assert t.loc[LABELS[c], k] == pytest.approx(want[c][k]), (c, k)
    assert t.loc["accuracy", "f1-score"] == pytest.approx(want["accuracy"])
    for k in ("macro avg", "weighted avg"):
        assert t.loc[k, "recall"] == pytest.approx(want[k]["recall"])


def test_confusion_matrix_draws_scikit_learns_counts_with_the_papers_labels(exp):
    root, files, _, pred = exp
    ctx, suffixes = _run(root, files, {"kind": "confusion_matrix", "name": "f"})
    assert suffixes == [".pdf", ".png"]
    ax = ctx.figures["f"].axes[0]
    want = confusion_matrix(pred["target"], pred["pred"])
    # coloured by the share of each true class, written as count and share
    assert np.allclose(np.asarray(ax.images[0].get_array()), want / want.sum(1, keepdims=True))
    assert [t.get_text() for t in ax.texts] == [f"{n}\n({n / row.sum():.0%})" for row in want for n in row]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Normal", "Pneumonia"]


def test_learning_curves_plot_the_history_train_against_validation(exp):
    root, files, _, _ = exp
    ctx, _ = _run(root, files, {"kind": "learning_curves", "name": "f", "metrics": ["loss"]})
    hist = pd.read_csv(files["history"])
    lines = [ln for ax in ctx.figures["f"].axes for ln in ax.get_lines()]
    ys = sorted(tuple(np.round(ln.get_ydata(), 6)) for ln in lines)
    assert ys == sorted([tuple(hist["loss"]), tuple(hist["val_loss"])])
    assert ctx.figures["f"].get_suptitle() == "paper, e1: learning curves"


def test_history_and_model_summary_are_their_files(exp):
    root, files, _, _ = exp
    _run(root, files, {"kind": "history", "name": "h"})
    _run(root, files, {"kind": "model_summary", "name": "s"})
    pd.testing.assert_frame_equal(_table(root, "h"), pd.read_csv(files["history"]))
    pd.testing.assert_frame_equal(_table(root, "s"), pd.read_csv(files["model_summary"]))


def test_class_counts_are_the_splits_crosstab_in_table_and_bars(exp):
    root, files, split, _ = exp
    ctx, suffixes = _run(root, files, {"kind": "class_counts", "name": "c"})
    assert suffixes == [".csv", ".md", ".pdf", ".png", ".tex"]
    want = pd.crosstab(split["split"], split["class"]).reindex(["train", "val", "test"])
    got = _table(root, "c").set_index("split")
    assert got[NAMES].to_numpy().tolist() == want[NAMES].to_numpy().tolist()
    bars = [p.get_height() for p in ctx.figures["c"].axes[0].patches if isinstance(p, Rectangle)]
    assert sorted(bars) == sorted(want.to_numpy().ravel().tolist())


def test_sample_grid_shows_images_of_the_class_and_split_asked(exp):
    root, files, split, _ = exp
    ctx, _ = _run(root, files, {"kind": "sample_grid", "name": "g", "label": "pneumonia", "n": 4, "size": 20})
    shown = [np.asarray(im.get_array()) for ax in ctx.figures["g"].axes for im in ax.images]
    pool = split[(split["class"] == "pneumonia") & (split["split"] == "train")]
    assert len(shown) == min(4, len(pool)) == 4
    candidates = [np.asarray(Image.open(p).convert("L").resize((20, 20), Image.BILINEAR)) for p in pool["png"]]
    for arr in shown:
        assert any(np.array_equal(arr, c) for c in candidates)
    with pytest.raises(ValueError, match=r"output g2: no train image of class 'effusion'; classes are"):
        _run(root, files, {"kind": "sample_grid", "name": "g2", "label": "effusion"})


def test_intensity_histogram_counts_the_images_pixels(exp):
    root, files, split, _ = exp
    ctx, _ = _run(root, files, {"kind": "intensity_histogram", "name": "h", "index": 1})
    row = split[split["split"] == "train"].iloc[1]
    arr = np.asarray(Image.open(row["png"]).convert("L"))
    a, b = ctx.figures["h"].axes
    assert np.array_equal(np.asarray(a.images[0].get_array()), arr)
    heights = [p.get_height() for p in b.patches]
    assert heights == np.histogram(arr.ravel(), bins=64, range=(0, 255))[0].tolist()


def test_metrics_table_follows_dotted_paths_and_labels_rows(exp):
    root, files, _, _ = exp
    m2 = root / "m2.json"
    m2.write_text(json.dumps({"test": {"accuracy": 0.25, "macro_avg": {"f1": 0.2}}, "mask_shape": "ellipse"}))
    all_files = {"e1": files, "e2": {**files, "metrics": m2}}
    _run(root, files, {"kind": "metrics_table", "name": "m", "experiments": ["e1", "e2"],
                       "row_labels": {"e2": "Exp. 2"}, "columns": {"acc": "test.accuracy", "f1": "test.macro_avg.f1"}},
         all_files)
    t = _table(root, "m")
    m1 = json.loads(files["metrics"].read_text())["test"]
    assert t["experiment"].tolist() == ["e1", "Exp. 2"]
    assert t["acc"].tolist() == pytest.approx([m1["accuracy"], 0.25])
    assert t["f1"].tolist() == pytest.approx([m1["macro_avg"]["f1"], 0.2])
    # a detection table says how its ground truth was made
    assert "ellipses inscribed in the RSNA boxes" in (root / "out" / "tables" / "m.md").read_text()


def test_roc_curve_is_scikit_learns_with_its_auc(exp):
    root, files, _, pred = exp
    ctx, _ = _run(root, files, {"kind": "roc_curve", "name": "r"})
    ax = ctx.figures["r"].axes[0]
    fpr, tpr, _ = roc_curve(pred["target"], pred["prob_pneumonia"])
    curve = ax.get_lines()[0]
    assert np.allclose(curve.get_xdata(), fpr) and np.allclose(curve.get_ydata(), tpr)
    auc = roc_auc_score(pred["target"], pred["prob_pneumonia"])
    assert f"{auc:.2f}" in ax.get_legend().get_texts()[0].get_text()


def test_equalization_shows_the_image_before_and_after_the_papers_equalisation(exp):
    root, files, split, _ = exp
    ctx, _ = _run(root, files, {"kind": "equalization", "name": "q", "label": "healthy", "index": 1})
    row = split[(split["split"] == "test") & (split["class"] == "healthy")].iloc[1]
    img = np.asarray(Image.open(row["png"]).convert("L"))
    fig = ctx.figures["q"]
    before, after = (np.asarray(ax.images[0].get_array()) for ax in fig.axes[:2])
    assert np.array_equal(before, img) and np.array_equal(after, equalize(img, "global"))
    cumulative = [ln.get_ydata() for ax in fig.axes for ln in ax.get_lines()]
    assert np.allclose(cumulative[0], np.cumsum(np.bincount(img.ravel(), minlength=256)) / img.size)
    with pytest.raises(ValueError, match=r"output q2: no test image of class 'effusion'"):
        _run(root, files, {"kind": "equalization", "name": "q2", "label": "effusion"})


@pytest.fixture
def detections(tmp_path):
    """Two detection experiments: four test images, their COCO annotations, scored results and the
    per-image table (image IoU) evaluation writes."""
    h, w = 32, 32
    images, anns, res, rows = [], [], [], []

    def box(y0, x0, y1, x1):
        m = np.zeros((h, w), np.uint8)
        m[y0:y1, x0:x1] = 1
        return m

    for i in range(4):
        png = tmp_path / f"d{i}.png"
        Image.fromarray(np.full((h, w), 40 * (i + 1), np.uint8)).save(png)
        images.append({"id": i + 1, "file_name": str(png), "height": h, "width": w})
        true = box(4, 4, 20, 20)
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "segmentation": encode(true),
                     "area": int(true.sum()), "bbox": [4, 4, 16, 16], "iscrowd": 0})
        pred = box(4, 4, 20, 8 + 4 * i)  # the IoU grows with i
        res.append({"image_id": i + 1, "category_id": 1, "score": 0.9, "segmentation": encode(pred)})
        res.append({"image_id": i + 1, "category_id": 1, "score": 0.1, "segmentation": encode(box(24, 24, 30, 30))})
        iou = (pred & true).sum() / (pred | true).sum()
        rows.append({"image_id": f"d{i}", "coco_id": i + 1, "png": str(png), "n_true": 1, "image_iou": iou})
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                  "categories": [{"id": 1, "name": "opacity"}]}))
    (tmp_path / "res.json").write_text(json.dumps(res))
    pd.DataFrame(rows).to_csv(tmp_path / "per_image.csv", index=False)
    pd.DataFrame([{**rows[0], "image_iou": 0.5}, {**rows[1], "image_iou": 0.7}, {**rows[2], "n_true": 0,
                  "image_iou": None}]).to_csv(tmp_path / "per_image2.csv", index=False)
    for k, (tn, fp, fn, tp) in enumerate([(5, 1, 2, 7), (3, 3, 1, 8)]):
        (tmp_path / f"dm{k}.json").write_text(json.dumps({"score_threshold": 0.5, "mask_shape": "box",
                                                          "image": {"tn": tn, "fp": fp, "fn": fn, "tp": tp}}))
    f1 = {"metrics": tmp_path / "dm0.json", "per_image": tmp_path / "per_image.csv",
          "annotations_test": tmp_path / "gt.json", "predictions": tmp_path / "res.json"}
    f2 = {**f1, "metrics": tmp_path / "dm1.json", "per_image": tmp_path / "per_image2.csv"}
    return tmp_path, {"mr1": f1, "mr2": f2}, rows, (box, h, w)


@pytest.mark.parametrize("pick,index", [("worst", 0), ("median", 2), ("best", 3)])
def test_mask_overlay_picks_the_image_and_draws_kept_detections_only(detections, pick, index):
    root, all_files, rows, (box, h, w) = detections
    ctx, _ = _run(root, all_files["mr1"], {"kind": "mask_overlay", "name": "o", "pick": pick}, all_files, "mr1")
    fig = ctx.figures["o"]
    true, pred = (np.asarray(ax.images[0].get_array()).astype(bool) for ax in fig.axes[:2])
    assert np.array_equal(true, box(4, 4, 20, 20).astype(bool))
    # the detection scored 0.1 is below the experiment's score threshold (0.5) and is not drawn
    assert np.array_equal(pred, box(4, 4, 20, 8 + 4 * index).astype(bool))
    assert f"image IoU {rows[index]['image_iou']:.3f} ({pick} of 4" in fig.texts[0].get_text()


def test_iou_distribution_shows_each_experiments_image_ious(detections):
    root, all_files, rows, _ = detections
    ctx, _ = _run(root, all_files["mr1"], {"kind": "iou_distribution", "name": "d", "experiments": ["mr1", "mr2"],
                                           "row_labels": {"mr2": "Exp. 2"}}, all_files, "mr1")
    a, b = ctx.figures["d"].axes
    ious = np.array([r["image_iou"] for r in rows])
    legend = [t.get_text() for t in a.get_legend().get_texts()]
    assert legend == [f"mr1 (mean {ious.mean():.3f}, sd {ious.std():.3f})", "Exp. 2 (mean 0.600, sd 0.100)"]
    medians = [ln.get_ydata()[0] for ln in b.get_lines()[5::7]]  # per box: box, whiskers, caps, median, fliers
    assert medians == pytest.approx([np.median(ious), 0.6])
    assert [t.get_text() for t in b.get_xticklabels()] == ["mr1", "Exp. 2"]


def test_detection_confusion_draws_each_experiments_image_counts(detections):
    root, all_files, _, _ = detections
    ctx, _ = _run(root, all_files["mr1"], {"kind": "detection_confusion", "name": "c", "experiments": ["mr1", "mr2"]},
                  all_files, "mr1")
    for ax, want in zip(ctx.figures["c"].axes, ([[5, 1], [2, 7]], [[3, 3], [1, 8]])):
        assert np.array_equal(np.asarray(ax.images[0].get_array()), want)
        assert [t.get_text() for t in ax.get_yticklabels()] == ["Normal", "Pneumonia"]
    plt.close("all")
