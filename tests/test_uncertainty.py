"""Intervals on reproduced numbers: the bootstrap against normal theory and grouped resampling,
DeLong's AUC interval against a brute-force computation of its placement values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from medrepro.metrics import classification_metrics
from medrepro.uncertainty import bootstrap_metrics, delong_ci, flatten


def test_bootstrap_interval_of_a_mean_matches_normal_theory():
    x = np.random.default_rng(1).normal(3.0, 2.0, 400)
    rows = pd.DataFrame({"x": x})
    ci = bootstrap_metrics(rows, lambda r: {"m": {"mean": r["x"].mean()}}, n_resamples=2000, seed=3)
    low, high = ci["intervals"]["m.mean"]
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert low == pytest.approx(x.mean() - half, abs=0.04) and high == pytest.approx(x.mean() + half, abs=0.04)
    assert ci["unit"] == "row" and ci["units"] == 400 and ci["n_resamples"] == 2000
    again = bootstrap_metrics(rows, lambda r: {"m": {"mean": r["x"].mean()}}, n_resamples=2000, seed=3)
    assert again["intervals"] == ci["intervals"]  # seeded


def test_bootstrap_resamples_whole_patients():
    # two images per patient: drawing patients keeps both images of each draw together (every
    # patient's row count stays even); drawing rows splits them
    rows = pd.DataFrame({"patient_id": np.repeat([f"p{i}" for i in range(30)], 2), "v": np.arange(60)})

    def paired(r):
        return {"patients_with_both_images": float((r.groupby("patient_id").size() % 2 == 0).mean())}

    grouped = bootstrap_metrics(rows, paired, "patient_id", n_resamples=200)
    assert grouped["unit"] == "patient_id" and grouped["units"] == 30
    assert grouped["intervals"]["patients_with_both_images"] == [1.0, 1.0]
    by_row = bootstrap_metrics(rows, paired, None, n_resamples=200)
    assert by_row["unit"] == "row" and by_row["intervals"]["patients_with_both_images"][1] < 1.0


def test_bootstrap_covers_every_classification_metric_and_says_when_a_resample_lacks_a_class():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(40, int), np.ones(4, int)]  # a rare class: some resamples miss it
    p = np.clip(0.6 * y + 0.5 * rng.random(len(y)), 0, 1)
    rows = pd.DataFrame({"target": y, "pred": (p > 0.5).astype(int), "prob_a": 1 - p, "prob_b": p})
    point = {"test": classification_metrics(rows, ["a", "b"])}
    ci = bootstrap_metrics(rows, lambda r: {"test": classification_metrics(r, ["a", "b"])}, n_resamples=300)
    # every number, per-class ones and the matrix included, but the totals the test set fixes
    fixed = {k for k in flatten(point) if k.rpartition(".")[2] in ("n", "support")}
    assert fixed and set(ci["intervals"]) == set(flatten(point)) - fixed
    low, high = ci["intervals"]["test.accuracy"]
    assert low <= point["test"]["accuracy"] <= high
    assert ci["undefined"]["test.auc"] > 0  # resamples without a positive have no AUC


def test_intervals_mean_something_exact_at_0_and_1_integers_for_counts_and_the_basis_said():
    """Precision 12 of 12 gets Clopper-Pearson's interval (from the beta distribution here), not
    [1, 1]; counts get integer bounds; totals none; few units and missing patient ids are said."""
    y = np.r_[np.zeros(30, int), np.ones(20, int)]
    pred = y.copy()
    pred[30:38] = 0  # class b: 12 of 20 found, and every b prediction right (precision 12 of 12)
    rows = pd.DataFrame({"target": y, "pred": pred, "prob_a": 1.0 - pred * 0.8, "prob_b": pred * 0.8,
                         "patient_id": [f"p{i // 2}" for i in range(50)]})
    fn = lambda r: {"test": classification_metrics(r, ["a", "b"])}  # noqa: E731
    ci = bootstrap_metrics(rows, fn, "patient_id", n_resamples=200)
    assert ci["unit"] == "patient_id" and ci["units"] == 25 and "warning" not in ci and "fallback" not in ci
    low, high = ci["intervals"]["test.per_class.b.precision"]
    assert (low, high) == pytest.approx((stats.beta.ppf(0.025, 12, 1), 1.0))
    assert ci["exact"]["test.per_class.b.precision"] == "Clopper-Pearson, 12 of 12"
    low, high = ci["intervals"]["test.per_class.a.recall"]  # 30 of 30 a images called a
    assert (low, high) == pytest.approx((stats.beta.ppf(0.025, 30, 1), 1.0))
    for path in ("test.tp", "test.fn", "test.per_class.b.predicted", "test.confusion_matrix.1.0"):
        assert all(float(b).is_integer() for b in ci["intervals"][path]), path
    assert "test.n" not in ci["intervals"] and "test.per_class.a.support" not in ci["intervals"]
    # nine patients: rough, and said; a missing patient id: resampled by row, and said
    few = bootstrap_metrics(rows.assign(patient_id=[f"p{i % 9}" for i in range(50)]), fn, "patient_id",
                            n_resamples=50)
    assert few["warning"] == "only 9 resampling units (patient_id): the intervals are rough"
    holes = rows.assign(patient_id=[None, ""] + list(rows["patient_id"][2:]))
    fb = bootstrap_metrics(holes, fn, "patient_id", n_resamples=50)
    assert fb["unit"] == "row" and fb["units"] == 50 and fb["fallback"] == "2 of 50 rows have no patient_id: " \
        "resampled row by row"


def test_delong_matches_roc_auc_and_brute_force_placement_values():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 70)
    s = np.round(y * 0.8 + rng.normal(0, 0.7, 70), 1)  # rounded: ties count one half
    d = delong_ci(y, s)
    assert d["auc"] == pytest.approx(roc_auc_score(y, s))
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # Mann-Whitney kernel
    v10, v01 = psi.mean(1), psi.mean(0)  # DeLong's placement values, by their definition
    se = np.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    assert d["se"] == pytest.approx(se, rel=1e-10)
    z = stats.norm.ppf(0.975)
    assert d["low"] == pytest.approx(max(0, d["auc"] - z * se))
    assert d["high"] == pytest.approx(min(1, d["auc"] + z * se))
    assert delong_ci(np.zeros(5), np.arange(5))["auc"] is None
    # and as MLstatkit computes it (its per-model intervals of the DeLong test, by its own midranks)
    from MLstatkit import Delong_test

    *_, ci, _, auc, _, info = Delong_test(y, s, rng.normal(0, 1, 70))
    assert info["method"] == "delong" and auc == pytest.approx(d["auc"], rel=1e-12)
    assert ci == pytest.approx((d["low"], d["high"]), rel=1e-10)


def test_bootstrap_by_patient_takes_patients_from_the_split_file(tmp_path):
    """Test rows keyed by image id get their patient from the split CSV (the file the workflow
    wrote); without one every row is its own unit."""
    from medrepro.uncertainty import bootstrap_by_patient

    split = pd.DataFrame({"image_id": [f"im{i}" for i in range(40)], "patient_id": [f"p{i // 2}" for i in range(40)],
                          "split": "test"})
    split.to_csv(tmp_path / "split.csv", index=False)
    rows = pd.DataFrame({"image_id": split["image_id"], "v": np.arange(40.0)})
    settings = {"n_resamples": 50, "seed": 1, "confidence": 0.9}
    by_file = bootstrap_by_patient(rows, lambda r: {"m": r["v"].mean()}, settings, tmp_path / "split.csv")
    by_table = bootstrap_by_patient(rows, lambda r: {"m": r["v"].mean()}, settings, split)
    assert by_file["unit"] == "patient_id" and by_file["units"] == 20 and by_file == by_table
    assert by_file["confidence"] == 0.9 and by_file["n_resamples"] == 50
    alone = bootstrap_by_patient(rows, lambda r: {"m": r["v"].mean()}, settings)
    assert alone["unit"] == "row" and alone["units"] == 40


def test_verdicts_on_simulated_reproductions_have_the_nominal_error_rate_and_the_expected_power():
    """Published and reproduced accuracies both drawn from a test set of 624 images: a perfect
    reproduction reads 'different' about 5 % of the time; one 5 points lower is found at the power
    the normal theory gives; with a 5-point margin a perfect one reads 'consistent' as often as
    the two one-sided tests allow."""
    from medrepro.uncertainty import compare_estimates, published_se

    rng = np.random.default_rng(11)
    n, sims = 624, 4000
    z = stats.norm.ppf(0.975)

    def verdicts(p_pub, p_rep, margin=None):
        pub, rep = rng.binomial(n, p_pub, sims) / n, rng.binomial(n, p_rep, sims) / n
        out = []
        for a, b in zip(pub, rep):
            ci = stats.binomtest(int(round(b * n)), n).proportion_ci(method="wilson")  # the reproduced interval
            se, _ = published_se(a, n, None, n, n)
            out.append(compare_estimates(a, b, ci.low, ci.high, se, margin)["verdict"])
        return np.array(out)

    perfect = verdicts(0.85, 0.85)
    assert abs((perfect == "different").mean() - 0.05) < 0.015
    shifted = verdicts(0.85, 0.80)
    se = np.sqrt(0.85 * 0.15 / n + 0.80 * 0.20 / n)
    power = stats.norm.cdf(-z + 0.05 / se) + stats.norm.cdf(-z - 0.05 / se)
    assert abs((shifted == "different").mean() - power) < 0.04, power
    equivalent = verdicts(0.85, 0.85, margin=0.05)
    se0 = np.sqrt(2 * 0.85 * 0.15 / n)
    tost = 2 * stats.norm.cdf((0.05 - stats.norm.ppf(0.95) * se0) / se0) - 1
    assert abs((equivalent == "consistent").mean() - tost) < 0.05, tost
    assert set(np.unique(perfect)) <= {"different", "inconclusive"}  # no margin, no claim of equivalence


def test_published_error_from_its_base_or_scaled_or_none():
    from medrepro.uncertainty import published_se

    se, how = published_se(0.86, base=12, rep_se=0.1, rep_n=12, pub_n=624)  # accuracy: 624 of the paper's images
    ci = stats.binomtest(537, 624).proportion_ci(method="wilson")
    assert se == pytest.approx((ci.high - ci.low) / (2 * stats.norm.ppf(0.975))) and how == "binomial"
    se, how = published_se(0.9, base=None, rep_se=0.08, rep_n=16, pub_n=64)  # an F1: the error scaled
    assert se == pytest.approx(0.04) and how == "scaled"
    assert published_se(0.9, 10, 0.1, 10, None) == (None, "none (exact)")  # no test-set size: taken as exact


def test_paired_difference_of_accuracies_matches_scipys_paired_bootstrap_and_keeps_patients_together():
    from medrepro.metrics import paper_scores
    from medrepro.uncertainty import paired_difference

    rng = np.random.default_rng(5)
    n = 300
    y = rng.integers(0, 2, n)
    right_b = rng.random(n) < 0.7
    right_a = right_b | (rng.random(n) < 0.25)   # model a: b's hits and some more
    a = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "target": y, "pred": np.where(right_a, y, 1 - y)})
    b = a.assign(pred=np.where(right_b, y, 1 - y)).sample(frac=1.0, random_state=1)   # any row order
    res = paired_difference(a, b, lambda r: paper_scores(r, ["x", "y"]), ["accuracy"], n_resamples=2000, seed=7)
    m = res["metrics"]["accuracy"]
    assert m["a"] == pytest.approx(right_a.mean()) and m["b"] == pytest.approx(right_b.mean())
    assert m["difference"] == pytest.approx(right_a.mean() - right_b.mean())
    assert res["unit"] == "image" and res["units"] == n   # no patient ids: image by image
    # independently: scipy's own paired bootstrap of the mean of the per-image differences
    ref = stats.bootstrap((right_a.astype(float), right_b.astype(float)), lambda u, v, axis=-1: (u - v).mean(axis=axis),
                          paired=True, n_resamples=2000, method="percentile", rng=np.random.default_rng(11))
    assert m["ci"][0] == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert m["ci"][1] == pytest.approx(ref.confidence_interval.high, abs=0.01)
    # paired: far narrower than two independent intervals would make the difference
    se_unpaired = np.sqrt(right_a.var() / n + right_b.var() / n)
    assert m["ci"][1] - m["ci"][0] < 0.8 * 2 * 1.96 * se_unpaired
    # the same model twice: no difference, and an interval of exactly 0
    same = paired_difference(a, a, lambda r: paper_scores(r, ["x", "y"]), ["accuracy", "f1"], n_resamples=200)
    assert same["metrics"]["f1"]["difference"] == 0 and same["metrics"]["accuracy"]["ci"] == [0.0, 0.0]
    # patients resampled whole: 30 patients of 10 images each
    a2 = a.assign(patient_id=[f"p{k // 10}" for k in range(n)])
    grouped = paired_difference(a2, b, lambda r: paper_scores(r, ["x", "y"]), ["accuracy"], n_resamples=500, seed=7)
    assert grouped["unit"] == "patient_id" and grouped["units"] == 30
    with pytest.raises(ValueError, match="same test images"):
        paired_difference(a, b.iloc[1:], lambda r: paper_scores(r, ["x", "y"]), ["accuracy"])
