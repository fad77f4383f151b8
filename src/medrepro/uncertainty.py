"""How sure is a reproduced number, and does it agree with the published one?  Bootstrap
confidence intervals over the test images, DeLong's interval for a ROC AUC, and the verdict of a
comparison as two estimates, each with its error (:func:`published_se`, :func:`compare_estimates`:
different when the difference's interval excludes 0, consistent when Schuirmann's two one-sided
tests put it within an equivalence margin, inconclusive otherwise).

:func:`bootstrap_metrics` resamples the rows a metric is computed from (test predictions, or one
row per test image of a detector), **by patient** where the rows carry a patient id (slices or
follow-up images of one patient move together), recomputes the whole metrics dict on each
resample and returns a percentile interval for every number in it, keyed by its dotted path (the
paths the comparison rows name).  The resampling is :func:`scipy.stats.bootstrap` (percentile
method, seeded).

:func:`delong_ci` is DeLong, DeLong & Clarke-Pearson (1988), *Biometrics* 44:837-845,
doi:10.2307/2531595, in the fast midrank form of Sun & Xu (2014), *IEEE Signal Processing
Letters* 21:1389-1393, doi:10.1109/LSP.2014.2337313.  Two packages on PyPI compute it and neither
is used: MLstatkit's ``Delong_test`` gives one model's interval only beside a two-model test, and
falls back to a bootstrap when the variance degenerates; confidenceinterval requires
``setuptools~=68.2`` at run time (this project builds with 77 or later) and statsmodels.  These
25 lines are checked against MLstatkit and against DeLong's placement values in the tests.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


def flatten(tree, prefix: str = "") -> dict[str, float]:
    """Every number in a nested dict/list, keyed by its dotted path (booleans and strings left out)."""
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return out
    for k, v in items:
        path = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[path] = float(v)
        elif isinstance(v, (dict, list)):
            out.update(flatten(v, path + "."))
    return out


# leaves that are fixed by the test set (no interval) and leaves that count images (integer bounds)
FIXED_LEAVES = {"n", "total", "support"}
COUNT_LEAVES = {"correct", "incorrect", "predicted", "tp", "fp", "fn", "tn"}
FEW_UNITS = 20  # fewer resampling units than this: the interval is flagged as unreliable


def proportion_base(point: dict[str, float], path: str) -> int | None:
    """The denominator of the proportion at ``path`` of a flattened metrics dict, read from its
    siblings: accuracy (``n``, ``total``, or tp+fp+fn+tn), recall (``support``, ``total``, or
    tp+fn), precision (``predicted``, or tp+fp), sensitivity (tp+fn), specificity (tn+fp); None
    for anything else (F1, AUC, loss: not a proportion of images)."""
    parent, _, leaf = path.rpartition(".")
    pre = parent + "." if parent else ""

    def get(*names):
        vals = [point.get(pre + n) for n in names]
        return int(round(sum(vals))) if all(v is not None for v in vals) else None

    rules = {"accuracy": (("n",), ("total",), ("tp", "fp", "fn", "tn")),
             "recall": (("support",), ("total",), ("tp", "fn")),
             "precision": (("predicted",), ("tp", "fp")),
             "sensitivity": (("tp", "fn"),), "specificity": (("tn", "fp"),)}
    for names in rules.get(leaf, ()):
        n = get(*names)
        if n is not None:
            return n
    return None


def bootstrap_metrics(rows: pd.DataFrame, metric_fn: Callable[[pd.DataFrame], dict], group: str | None = None,
                      n_resamples: int = 1000, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """Percentile bootstrap intervals of the numbers ``metric_fn(rows)`` returns.

    ``group`` names a column (``patient_id``) whose values are resampled instead of single rows;
    when some rows lack it, the rows are resampled one by one and ``"fallback"`` says why.
    Returns ``{"method", "unit", "units", "n_resamples", "confidence", "seed", "intervals":
    {path: [low, high]}}``, where a path whose resamples are sometimes undefined (a class missing
    from a resample) gets the interval of the defined ones and its count in ``"undefined"``.
    Intervals mean something or are not given: none for totals the test set fixes
    (:data:`FIXED_LEAVES`); integer bounds for counts (:data:`COUNT_LEAVES`); where every resample
    gives the same 0 or 1 (precision 23 of 23), Clopper-Pearson's exact interval of k of n
    (:func:`proportion_base`), listed in ``"exact"``; ``"warning"`` when there are fewer than
    :data:`FEW_UNITS` resampling units.
    """
    rows = rows.reset_index(drop=True)
    keys, unit, fallback = _resampling_units(rows, group)
    uniq, inverse = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    point = flatten(metric_fn(rows))
    paths = sorted(point)
    if len(uniq) < 2 or not paths:
        return {"method": "percentile bootstrap", "unit": unit, "units": int(len(uniq)), "n_resamples": 0,
                "confidence": confidence, "seed": seed, "intervals": {}}

    def statistic(idx):
        take = np.concatenate([members[int(g)] for g in idx])
        m = flatten(metric_fn(rows.iloc[take]))
        return np.array([m.get(p, np.nan) for p in paths], dtype=float)

    with warnings.catch_warnings():  # undefined resamples (NaN) are handled below, per metric
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap((np.arange(len(uniq)),), statistic, vectorized=False, n_resamples=n_resamples,
                              confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, float).reshape(len(paths), -1)
    intervals, undefined, exact = _intervals(point, paths, dist, confidence)
    out = {"method": "percentile bootstrap (scipy.stats.bootstrap)", "unit": unit, "units": int(len(uniq)),
           "n_resamples": int(n_resamples), "confidence": confidence, "seed": seed, "intervals": intervals}
    if undefined:
        out["undefined"] = undefined
    if exact:
        out["exact"] = exact
    if fallback:
        out["fallback"] = fallback
    if len(uniq) < FEW_UNITS:
        out["warning"] = f"only {len(uniq)} resampling units ({unit}): the intervals are rough"
    return out


def _resampling_units(rows: pd.DataFrame, group: str | None) -> tuple[np.ndarray, str, str | None]:
    """Each row's resampling unit (its ``group`` value, or itself where a row lacks one), the unit's
    name and, for the fallback to rows, why."""
    ids = rows[group].fillna("").astype(str) if group and group in rows else None
    if ids is not None and ids.str.len().gt(0).all():
        return ids.to_numpy(), group, None
    fallback = None
    if ids is not None:
        fallback = f"{int(ids.str.len().eq(0).sum())} of {len(rows)} rows have no {group}: resampled row by row"
    return np.arange(len(rows)).astype(str), "row", fallback


def _intervals(point: dict, paths: list, dist: np.ndarray, confidence: float) -> tuple[dict, dict, dict]:
    """Each metric's interval from its bootstrap distribution (see :func:`bootstrap_metrics`), the
    count of undefined resamples per metric, and the metrics given Clopper-Pearson's interval."""
    intervals, undefined, exact = {}, {}, {}
    alpha = (1 - confidence) / 2
    for i, p in enumerate(paths):
        leaf = p.rpartition(".")[2]
        if leaf in FIXED_LEAVES:
            continue
        col = dist[i]
        ok = col[~np.isnan(col)]
        if ok.size < col.size:  # a class missing from some resamples: the defined ones' percentiles
            undefined[p] = int(col.size - ok.size)
        if not ok.size:
            continue
        method = "inverted_cdf" if leaf in COUNT_LEAVES else "linear"  # counts: values the resamples took
        low, high = float(np.quantile(ok, alpha, method=method)), float(np.quantile(ok, 1 - alpha, method=method))
        n = proportion_base(point, p) if low == high and point[p] in (0.0, 1.0) else None
        if n:
            k = int(round(point[p] * n))
            ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
            low, high = float(ci.low), float(ci.high)
            exact[p] = f"Clopper-Pearson, {k} of {n}"
        intervals[p] = [low, high]
    return intervals, undefined, exact


def bootstrap_by_patient(rows: pd.DataFrame, metric_fn: Callable[[pd.DataFrame], dict], bootstrap: dict,
                         split=None) -> dict:
    """:func:`bootstrap_metrics` of test rows keyed by ``image_id``, resampled by patient: the
    ``patient_id`` of each image comes from ``split`` (the split table or its CSV) unless the rows
    carry it; ``bootstrap`` is the config's ``{n_resamples, seed, confidence}``."""
    if split is not None and "patient_id" not in rows:
        from .io import read_csv

        ids = (split if isinstance(split, pd.DataFrame) else read_csv(split))[["image_id", "patient_id"]]
        rows = rows.merge(ids, on="image_id", how="left").fillna({"patient_id": ""})
    return bootstrap_metrics(rows, metric_fn, "patient_id", bootstrap["n_resamples"], bootstrap["seed"],
                             bootstrap["confidence"])


def _midrank(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def delong_ci(y_true, score, confidence: float = CONFIDENCE) -> dict:
    """ROC AUC with DeLong's standard error and a normal-theory interval (clipped to [0, 1]).

    ``y_true`` holds 0/1, ``score`` the score of class 1.  Returns ``{"auc", "se", "low", "high"}``
    (None where undefined: one class only).
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(score, dtype=float)
    pos, neg = s[y == 1], s[y == 0]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return {"auc": None, "se": None, "low": None, "high": None}
    tx, ty, tz = _midrank(pos), _midrank(neg), _midrank(np.concatenate([pos, neg]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    v10 = (tz[:m] - tx) / n  # structural components of the positives
    v01 = 1.0 - (tz[m:] - ty) / m  # and of the negatives
    var = (np.var(v10, ddof=1) / m if m > 1 else 0.0) + (np.var(v01, ddof=1) / n if n > 1 else 0.0)
    se = math.sqrt(max(var, 0.0))
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    return {"auc": auc, "se": se, "low": max(0.0, auc - z * se), "high": min(1.0, auc + z * se)}


VERDICTS = ("consistent", "different", "inconclusive")


def published_se(published: float, base: int | None, rep_se: float | None, rep_n: int | None,
                 pub_n: int | None, confidence: float = CONFIDENCE) -> tuple[float | None, str]:
    """The published value's standard error and how it was had (the comparison's ``published
    error`` column): ``binomial``, ``scaled`` or ``none (exact)``.

    A proportion (``base``: its denominator in this test set, :func:`proportion_base`) measured by
    the paper on ``pub_n`` test images: binomial, Wilson's score interval's half-width over z for
    ``published`` on ``base * pub_n / rep_n`` images (the paper's test set, its classes in this
    one's proportions; Wilson's stays above 0 at 0 and 1).  Any other metric (F1, AUC, a mean
    IoU): the reproduced standard error scaled to the paper's test-set size,
    ``rep_se * sqrt(rep_n / pub_n)``.  Without ``pub_n`` (the paper gives no test-set size): None,
    and the published value is taken as exact."""
    if not pub_n:
        return None, "none (exact)"
    if base and rep_n and 0 <= published <= 1:
        n = max(1, int(round(base * pub_n / rep_n)))
        k = min(n, max(0, int(round(published * n))))
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        z = stats.norm.ppf(1 - (1 - confidence) / 2)
        return (ci.high - ci.low) / (2 * z), "binomial"
    if rep_se is not None and rep_n:
        return rep_se * math.sqrt(rep_n / pub_n), "scaled"
    return None, "none (exact)"


def compare_estimates(published: float, reproduced: float, low: float | None, high: float | None,
                      pub_se: float | None, margin: float | None = None, confidence: float = CONFIDENCE) -> dict:
    """Published against reproduced as two estimates, each with its error.

    The reproduced standard error is read from its interval (half-width over z); the difference
    ``reproduced - published`` gets the normal interval with both errors combined.  The verdict:
    ``different`` when that interval excludes 0 (a two-sided test at 1 - ``confidence``);
    ``consistent`` when the two one-sided tests (Schuirmann 1987) put the difference inside
    ±``margin`` (its 1 - 2 alpha interval within the margin); ``inconclusive`` otherwise (and always
    without a margin, when not different)."""
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    z_tost = stats.norm.ppf(confidence)  # the 1 - 2 alpha interval of the two one-sided tests
    rep_se = (high - low) / (2 * z)
    se = math.sqrt(rep_se ** 2 + (pub_se or 0.0) ** 2)
    d = reproduced - published
    out = {"difference": d, "diff_low": d - z * se, "diff_high": d + z * se, "se": se}
    if se == 0:
        out["verdict"] = "consistent" if d == 0 else "different"
        return out
    out["p_value"] = float(2 * stats.norm.sf(abs(d) / se))
    if out["diff_low"] > 0 or out["diff_high"] < 0:
        out["verdict"] = "different"
    elif margin and d - z_tost * se > -margin and d + z_tost * se < margin:
        out["verdict"] = "consistent"
    else:
        out["verdict"] = "inconclusive"
    return out


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, metric_fn: Callable[[pd.DataFrame], dict],
                      paths: list[str], *, group: str = "patient_id", n_resamples: int = 1000, seed: int = 0,
                      confidence: float = CONFIDENCE) -> dict:
    """Percentile bootstrap of ``metric_fn(a) - metric_fn(b)`` for two models' predictions on the
    same test images (rows keyed by ``image_id``; ``group`` names the resampling unit, taken from
    ``a``): each resample draws units once and scores both models on the same draw, so what the
    two share (the images' difficulty) cancels.  Returns, per dotted path of ``paths``, the two
    point values, their difference and its interval, with the resampling units and count."""
    ids_a, ids_b = set(a["image_id"]), set(b["image_id"])
    if ids_a != ids_b:
        raise ValueError(f"paired_difference needs the same test images: {len(ids_a - ids_b)} only in the first, "
                         f"{len(ids_b - ids_a)} only in the second (e.g. {sorted(ids_a ^ ids_b)[:3]})")
    a = a.sort_values("image_id").reset_index(drop=True)
    b = b.set_index("image_id").loc[a["image_id"]].reset_index()
    if group in a and a[group].fillna("").astype(str).str.len().gt(0).all():
        keys, unit = a[group].astype(str).to_numpy(), group
    else:
        keys, unit = a["image_id"].astype(str).to_numpy(), "image"
    uniq, inverse = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]

    def values(rows_a, rows_b):
        fa, fb = flatten(metric_fn(rows_a)), flatten(metric_fn(rows_b))
        return np.array([fa[p] for p in paths] + [fb[p] for p in paths], dtype=float)

    point = values(a, b)

    def statistic(idx):
        take = np.concatenate([members[int(g)] for g in idx])
        v = values(a.iloc[take], b.iloc[take])
        return v[:len(paths)] - v[len(paths):]

    res = stats.bootstrap((np.arange(len(uniq)),), statistic, vectorized=False, n_resamples=n_resamples,
                          confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    out = {"method": "paired percentile bootstrap (scipy.stats.bootstrap)", "unit": unit, "units": int(len(uniq)),
           "n_resamples": int(n_resamples), "confidence": confidence, "seed": seed, "metrics": {}}
    for i, p in enumerate(paths):
        out["metrics"][p] = {"a": float(point[i]), "b": float(point[len(paths) + i]),
                             "difference": float(point[i] - point[len(paths) + i]),
                             "ci": [float(res.confidence_interval.low[i]), float(res.confidence_interval.high[i])]}
    if len(uniq) < FEW_UNITS:
        out["warning"] = f"only {len(uniq)} resampling units ({unit}): the intervals are rough"
    return out
