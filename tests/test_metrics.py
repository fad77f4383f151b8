"""Classification metrics (medrepro.metrics) against scikit-learn and hand counts: one vocabulary
for every classifier run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

from medrepro.metrics import classification_metrics, paper_scores, prediction_table, report_table, run_metrics


def test_classification_metrics_match_scikit_learns_report_and_log_loss():
    """The per-class scores and both averages equal classification_report's (a class never
    predicted and a class absent from the set included); the loss is log_loss of the float32
    probabilities as written (rows summing to 1 within 1e-7), renormalised, without a warning."""
    from sklearn.metrics import classification_report, log_loss

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 60)
    y[y == 2] = 1  # class 2 absent from the truth
    yhat = np.where(rng.random(60) < 0.7, y, rng.integers(0, 2, 60))  # class 2 never predicted
    p = rng.dirichlet(np.ones(4), 60)[:, :3].astype(np.float32)
    p = (p / p.sum(1, keepdims=True)).astype(np.float32)
    rows = pd.DataFrame({"target": y, "pred": yhat, **{f"prob_{c}": p[:, i] for i, c in enumerate("abc")}})
    m = classification_metrics(rows, ["a", "b", "c"])
    rep = classification_report(y, yhat, labels=[0, 1, 2], target_names=list("abc"), output_dict=True,
                                zero_division=0)
    for c in "abc":
        for k in ("precision", "recall", "f1", "support"):
            assert m["per_class"][c][k] == pytest.approx(rep[c][k.replace("f1", "f1-score")])
    for ours, theirs in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        for k in ("precision", "recall", "f1"):
            assert m[ours][k] == pytest.approx(rep[theirs][k.replace("f1", "f1-score")])
    exact = p.astype(float) / p.astype(float).sum(1, keepdims=True)
    assert m["data_loss"] == pytest.approx(-np.log(exact[np.arange(60), y]).mean(), rel=1e-9)
    assert m["data_loss"] == pytest.approx(log_loss(y, exact, labels=[0, 1, 2]), rel=1e-9)


def test_paper_scores_match_run_metrics_on_every_resample_shape():
    """The bootstrap's cheap scores are the same numbers as the full metrics (scikit-learn)."""
    rng = np.random.default_rng(3)
    names = ["a", "b", "c"]
    for n in (5, 17, 60):
        p = rng.dirichlet([1, 1, 1], n)
        target = rng.integers(0, 2, n)          # class 'c' never present: macro averages over 3 classes
        df = pd.DataFrame({"image_id": [str(i) for i in range(n)], "target": target, "pred": p.argmax(1),
                           **{f"prob_{c}": p[:, i] for i, c in enumerate(names)}, "split": "test"})
        full, fast = run_metrics(df, names), paper_scores(df, names)
        for k in ("accuracy", "precision", "recall", "f1", "correct", "incorrect", "total", "majority_rate"):
            assert fast[k] == pytest.approx(full[k]), (n, k)
        for c in names:
            for k in ("precision", "recall", "f1", "correct", "incorrect", "total"):
                assert fast["per_class"][c][k] == pytest.approx(full["per_class"][c][k]), (n, c, k)


def test_binary_metrics_follow_the_confusion_matrix_and_the_threshold():
    """Two classes: predicted positive when its probability reaches the threshold; counts, sensitivity,
    specificity, AUC and the majority rate as scikit-learn and hand counts give them."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 80)
    pos = np.clip(0.35 * y + rng.random(80) * 0.65, 0, 1)
    proba = np.stack([1 - pos, pos], axis=1)
    for threshold in (0.3, 0.5, 0.7):
        rows = prediction_table([str(i) for i in range(80)], y, proba, ["neg", "pos"], "test", threshold)
        assert (rows["pred"] == (pos >= threshold)).all()
        m = classification_metrics(rows, ["neg", "pos"])
        tn, fp, fn, tp = confusion_matrix(y, rows["pred"], labels=[0, 1]).ravel()
        assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
        assert m["sensitivity"] == pytest.approx(tp / (tp + fn)) and m["specificity"] == pytest.approx(tn / (tn + fp))
        assert m["accuracy"] == pytest.approx((tp + tn) / 80)
        assert m["auc"] == pytest.approx(roc_auc_score(y, pos))
        assert m["majority_rate"] == pytest.approx(max(y.mean(), 1 - y.mean()))
    one_class = prediction_table(["a", "b"], [1, 1], proba[:2], ["neg", "pos"])
    assert classification_metrics(one_class, ["neg", "pos"])["auc"] is None  # undefined, present


def test_multiclass_predictions_are_the_arg_max_and_the_paper_columns_add_up():
    rng = np.random.default_rng(11)
    names = ["glioma", "meningioma", "pituitary"]
    proba = rng.dirichlet([1, 1, 1], 45)
    y = rng.integers(0, 3, 45)
    rows = prediction_table([str(i) for i in range(45)], y, proba, names, "test", l2_penalty=0.25)
    assert (rows["pred"] == proba.argmax(1)).all() and (rows["l2_penalty"] == 0.25).all()
    r = run_metrics(rows, names)
    assert r["correct"] == int((rows["pred"] == y).sum()) and r["correct"] + r["incorrect"] == r["total"] == 45
    assert sum(c["total"] for c in r["per_class"].values()) == 45
    assert sum(c["correct"] for c in r["per_class"].values()) == r["correct"]
    for i, c in enumerate(names):
        assert r["per_class"][c]["total"] == int((y == i).sum())
    assert r["loss"] == pytest.approx(-np.log(proba[np.arange(45), y]).mean() + 0.25)  # Keras: data loss + L2
    table = report_table(classification_metrics(rows, names), {"glioma": "0 glioma"})
    assert list(table["class"]) == ["0 glioma", "meningioma", "pituitary", "accuracy", "macro avg", "weighted avg"]
    assert table.loc[table["class"] == "accuracy", "f1-score"].item() == pytest.approx(r["accuracy"])


def test_calibration_brier_and_ece_against_scikit_learns_curve_and_hand_counts():
    """ECE from scikit-learn's calibration curve (its uniform bins: observed and mean predicted
    frequency per non-empty bin) weighted by the bins' counts; Brier from its definition; a
    perfectly calibrated model's ECE shrinks towards 0 and an overconfident one's does not."""
    from sklearn.calibration import calibration_curve

    from medrepro.metrics import ECE_BINS, calibration

    rng = np.random.default_rng(0)
    for k in (2, 3):
        y = rng.integers(0, k, 400)
        proba = rng.dirichlet(np.ones(k), 400)
        proba[np.arange(400), y] += 0.6
        proba /= proba.sum(1, keepdims=True)
        pred = proba.argmax(1)
        got = calibration(y, proba, pred)
        conf, correct = proba.max(1), (pred == y).astype(int)
        frac, mean = calibration_curve(correct, conf, n_bins=ECE_BINS, strategy="uniform")
        counts = np.bincount(np.searchsorted(np.linspace(0, 1, ECE_BINS + 1)[1:-1], conf), minlength=ECE_BINS)
        counts = counts[counts > 0]
        assert got["ece"] == pytest.approx(float((counts / 400 * np.abs(frac - mean)).sum()), abs=1e-12)
        onehot = np.eye(k)[y]
        want = ((proba[:, 1] - y) ** 2).mean() if k == 2 else ((proba - onehot) ** 2).sum(1).mean()
        assert got["brier"] == pytest.approx(want, abs=1e-12)
    # hand counts: 4 images, two bins used; bin [0.8, 0.867): conf 0.8, 0.8, one right -> |0.5 - 0.8|;
    # bin [0.6, 0.667): conf 0.6, 0.6, both right -> |1 - 0.6|
    y = np.array([0, 1, 1, 1])
    proba = np.array([[0.8, 0.2], [0.8, 0.2], [0.4, 0.6], [0.4, 0.6]])
    pred = np.array([0, 0, 1, 1])
    assert calibration(y, proba, pred)["ece"] == pytest.approx((2 * 0.3 + 2 * 0.4) / 4)
    assert calibration(y, proba, pred)["brier"] == pytest.approx(np.mean([0.04, 0.64, 0.16, 0.16]))
    # calibrated by construction (y drawn from the probabilities) vs overconfident
    p1 = rng.uniform(0, 1, 20000)
    yy = (rng.uniform(0, 1, 20000) < p1).astype(int)
    calibrated = np.c_[1 - p1, p1]
    sharp = np.c_[1 - (p1 > 0.5), (p1 > 0.5)].astype(float) * 0.98 + 0.01
    assert calibration(yy, calibrated, calibrated.argmax(1))["ece"] < 0.02
    assert calibration(yy, sharp, sharp.argmax(1))["ece"] > 0.15
    # the metrics of every classifier carry them
    table = prediction_table(range(4), y, proba, ["a", "b"])
    m = classification_metrics(table, ["a", "b"])
    assert m["ece"] == pytest.approx((2 * 0.3 + 2 * 0.4) / 4) and m["brier"] == pytest.approx(0.25)
