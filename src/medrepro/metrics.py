"""Classification metrics from predictions only (predictions are the interface after training).

One vocabulary for every classifier run, experiment or study stage: ``precision``, ``recall``,
``f1``, ``support`` per class and as ``macro_avg``/``weighted_avg`` (scikit-learn's
classification report, whose printed table alone keeps its ``f1-score`` header), and the
papers' columns of :func:`run_metrics`; and calibration, which none of the papers reported
(:func:`calibration`: Brier score and expected calibration error)."""
from __future__ import annotations

import numpy as np
import pandas as pd

# scikit-learn is imported where a score is computed, not with this module: training and prediction
# jobs need only prediction_table, and sklearn.metrics brings SciPy's statistics (0.8 s of every
# such job's start on a 2-core machine)

# equal-width confidence bins of the expected calibration error: Guo, Pleiss, Sun & Weinberger
# (2017), "On calibration of modern neural networks", ICML, arXiv:1706.04599
ECE_BINS = 15


def prediction_table(ids, targets, proba: np.ndarray, class_names: list[str], split: str = "test",
                     threshold: float = 0.5, l2_penalty: float = 0.0) -> pd.DataFrame:
    """One row per image: id, true class, one probability column per class, predicted class.

    Two classes: predicted positive (index 1) when its probability >= ``threshold``;
    more classes: the arg-max.  A model with an L2 penalty records it in an ``l2_penalty``
    column (the same on every row): Keras adds it to every loss it reports, test loss included.
    """
    proba = np.asarray(proba)
    if len(class_names) == 2:
        pred = (proba[:, 1] >= threshold).astype(int)
    else:
        pred = proba.argmax(1)
    df = pd.DataFrame({"image_id": list(ids), "split": split, "target": np.asarray(targets, int), "pred": pred})
    for k, name in enumerate(class_names):
        df[f"prob_{name}"] = proba[:, k]
    if l2_penalty:
        df["l2_penalty"] = float(l2_penalty)
    return df


def classification_metrics(pred: pd.DataFrame, class_names: list[str]) -> dict:
    """Per-class precision/recall/F1/support, accuracy, confusion matrix, and (binary) AUC,
    sensitivity and specificity, all computed with scikit-learn; ``majority_rate`` is the accuracy
    of always predicting this set's most frequent class (the chance level accuracy must beat)."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y, yhat = pred["target"].to_numpy(), pred["pred"].to_numpy()
    labels = list(range(len(class_names)))
    # one pass of scikit-learn's per-class scores; the averages are classification_report's (macro:
    # the plain mean over classes, weighted: by support), computed here from them rather than by three
    # more passes (the bootstrap calls this hundreds of times)
    prec, rec, f1, support = precision_recall_fscore_support(y, yhat, labels=labels, zero_division=0)
    cm = confusion_matrix(y, yhat, labels=labels)
    per = np.stack([prec, rec, f1])
    weighted = per @ support / support.sum() if support.sum() else np.zeros(3)
    out = {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, yhat)),
        "majority_rate": float(np.bincount(y.astype(int), minlength=len(labels)).max() / len(y)) if len(y)
        else float("nan"),
        "per_class": {c: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                          "support": float(support[i]), "predicted": int(cm[:, i].sum())}
                      for i, c in enumerate(class_names)},
        "macro_avg": dict(zip(("precision", "recall", "f1"), map(float, per.mean(axis=1)))),
        "weighted_avg": dict(zip(("precision", "recall", "f1"), map(float, weighted))),
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }
    proba = pred[[f"prob_{c}" for c in class_names]].to_numpy(dtype=float)
    # rows written as float32 sum to 1 within 1e-7, not exactly: renormalised, as Keras' loss clips
    # and renormalises, so scikit-learn does not warn on every call
    proba = proba / proba.sum(axis=1, keepdims=True)
    # Keras' loss: the cross-entropy of the predicted probabilities plus the model's L2 penalty
    out["data_loss"] = float(log_loss(y, proba, labels=labels))
    out["l2_penalty"] = float(pred["l2_penalty"].iloc[0]) if "l2_penalty" in pred else 0.0
    out["loss"] = out["data_loss"] + out["l2_penalty"]
    out.update(calibration(y, proba, yhat, labels))
    if len(class_names) == 2:
        tn, fp, fn, tp = cm.ravel()
        out.update(tn=int(tn), fp=int(fp), fn=int(fn), tp=int(tp))
        out["sensitivity"] = float(tp / (tp + fn)) if tp + fn else float("nan")
        out["specificity"] = float(tn / (tn + fp)) if tn + fp else float("nan")
        # undefined with one class in the set: present but empty, so a comparison row naming it stays valid
        out["auc"] = float(roc_auc_score(y, pred[f"prob_{class_names[1]}"])) if len(np.unique(y)) == 2 else None
    return out


def calibration(y, proba, pred, labels=None, bins: int = ECE_BINS) -> dict:
    """How far the predicted probabilities are from the observed frequencies.

    ``brier``: scikit-learn's ``brier_score_loss`` (two classes: the mean squared error of the
    positive class's probability; more: summed over the classes).  ``ece``: the expected
    calibration error of the probability each image's predicted class got (its confidence), over
    ``bins`` equal-width bins of [0, 1] (scikit-learn's ``calibration_curve(strategy="uniform")``
    bins): the mean over images of |accuracy - mean confidence| of their bin."""
    from sklearn.metrics import brier_score_loss

    y, pred, proba = np.asarray(y, int), np.asarray(pred, int), np.asarray(proba, float)
    if not len(y):
        return {"brier": float("nan"), "ece": float("nan")}
    labels = list(range(proba.shape[1])) if labels is None else labels
    conf = proba[np.arange(len(y)), pred]
    edges = np.linspace(0.0, 1.0, bins + 1)
    b = np.searchsorted(edges[1:-1], conf)
    gap = np.bincount(b, weights=(pred == y), minlength=bins) - np.bincount(b, weights=conf, minlength=bins)
    return {"brier": float(brier_score_loss(y, proba, labels=labels)), "ece": float(np.abs(gap).sum() / len(y))}


def table_calibration(pred: pd.DataFrame, class_names: list[str]) -> dict:
    """:func:`calibration` of a prediction table's rows (its ``target``, ``pred`` and ``prob_*`` columns)."""
    proba = pred[[f"prob_{c}" for c in class_names]].to_numpy(dtype=float)
    proba = proba / proba.sum(axis=1, keepdims=True)
    return calibration(pred["target"].to_numpy(), proba, pred["pred"].to_numpy(), list(range(len(class_names))))


def report_table(metrics: dict, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """The classification report as a table: a row per class plus accuracy and averages."""
    labels = labels or {}
    rows = []
    for c, v in metrics["per_class"].items():
        rows.append({"class": labels.get(c, c), "precision": v["precision"], "recall": v["recall"],
                     "f1-score": v["f1"], "support": int(v["support"])})
    rows.append({"class": "accuracy", "precision": None, "recall": None, "f1-score": metrics["accuracy"],
                 "support": metrics["n"]})
    for k in ("macro_avg", "weighted_avg"):
        v = metrics[k]
        rows.append({"class": k.replace("_", " "), "precision": v["precision"], "recall": v["recall"],
                     "f1-score": v["f1"], "support": metrics["n"]})
    return pd.DataFrame(rows)


def _class_counts(cm, i: int) -> dict:
    """A class's test images (its confusion-matrix row), those called right and those called wrong,
    and the images predicted as the class (its column: precision's denominator)."""
    total = int(sum(cm[i]))
    return {"correct": int(cm[i][i]), "incorrect": total - int(cm[i][i]), "total": total,
            "predicted": int(sum(row[i] for row in cm))}


def run_metrics(pred: pd.DataFrame, names: list[str]) -> dict:
    """The paper's columns (macro averages) and the per-class report of one split's predictions."""
    m = classification_metrics(pred, names)
    correct = int((pred["target"] == pred["pred"]).sum())
    return {"accuracy": m["accuracy"], "precision": m["macro_avg"]["precision"], "recall": m["macro_avg"]["recall"],
            "f1": m["macro_avg"]["f1"], "loss": m["loss"], "correct": correct,
            "incorrect": int(len(pred) - correct), "total": int(len(pred)), "majority_rate": m["majority_rate"],
            "per_class": {c: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1"],
                              **_class_counts(m["confusion_matrix"], i)}
                          for i, (c, v) in enumerate(m["per_class"].items())},
            "confusion_matrix": m["confusion_matrix"]}


def paper_scores(rows: pd.DataFrame, names: list[str]) -> dict:
    """The paper's columns of :func:`run_metrics` (accuracy; macro precision, recall and F1 over all
    classes, 0 where a class is never predicted or never present, as scikit-learn's
    ``zero_division=0``; correct, incorrect, total; the same per class; the majority rate) from
    the rows' ``target`` and ``pred`` alone: one confusion matrix in NumPy, cheap enough for every
    bootstrap resample (tested equal to :func:`run_metrics`)."""
    k = len(names)
    t, p = rows["target"].to_numpy(int), rows["pred"].to_numpy(int)
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    tp, pred_n, true_n = np.diag(cm).astype(float), cm.sum(0), cm.sum(1)
    prec = np.divide(tp, pred_n, out=np.zeros(k), where=pred_n > 0)
    rec = np.divide(tp, true_n, out=np.zeros(k), where=true_n > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(k), where=(prec + rec) > 0)
    correct, n = int(tp.sum()), len(t)
    return {"accuracy": correct / n if n else 0.0, "precision": float(prec.mean()), "recall": float(rec.mean()),
            "f1": float(f1.mean()), "correct": correct, "incorrect": n - correct, "total": n,
            "majority_rate": float(true_n.max() / n) if n else float("nan"),
            "per_class": {c: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                              **_class_counts(cm, i)} for i, c in enumerate(names)}}
