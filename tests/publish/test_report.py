"""report.md's words: the learning check."""
from __future__ import annotations

import pandas as pd

from medrepro.publish.report import learning_check


def test_learning_check_is_decided_by_the_intervals_lower_bound():
    """Above chance only when the interval's lower bound is; the point estimate where no interval."""
    h = pd.DataFrame({"experiment": ["a", "b", "c", "d"], "metric": ["acc"] * 4,
                      "above chance": ["yes", "yes", "no", "yes"], "CI above chance": ["yes", "no", "no", "-"]})
    text = learning_check(h)
    assert text.startswith("**2 of 4 above chance by their intervals' lower bounds.**")
    assert "point estimate only (the interval reaches chance): b (acc)." in text
    assert "At or below chance: c (acc)." in text
    assert learning_check(h.iloc[[0, 3]]) == "All 2 above chance, by their intervals' lower bounds."


def test_verdict_counts_name_each_verdict_and_the_rest():
    from medrepro.publish.report import verdict_counts

    comp = pd.DataFrame({"verdict": ["consistent", "different", "different", "inconclusive", "no published value"]})
    assert verdict_counts(comp) == ("**Verdicts of 5 comparison rows: 1 consistent, 2 different, 1 inconclusive**; "
                                    "1 without a verdict (no interval or no published value).")


def test_the_summary_counts_each_papers_verdicts_learning_check_and_audit(tmp_path):
    from medrepro.publish.report import summary_table

    d = tmp_path / "p1" / "tables"
    d.mkdir(parents=True)
    pd.DataFrame({"verdict": ["consistent", "different", "inconclusive", "inconclusive", "no published value"]}
                 ).to_csv(d / "comparison.csv", index=False)
    pd.DataFrame({"experiment": ["a", "b"], "metric": ["acc", "acc"], "above chance": ["yes", "yes"],
                  "CI above chance": ["yes", "no"]}).to_csv(d / "headline.csv", index=False)
    t = summary_table({"p1": {}}, {"p1": tmp_path / "p1"}, {"p1": {"inconsistent": 3, "checks": 40}})
    assert t.to_dict("records") == [{"paper": "p1", "compared": 5, "consistent": 1, "different": 1,
                                     "inconclusive": 2, "above chance": "1 of 2", "audit findings": "3 of 40"}]


def test_forest_plots_hold_the_judged_rates_forty_a_figure(tmp_path):
    """Counts (on each test set's scale) and rows without a verdict stay out of the forest plots;
    the rates are split 40 to a figure, each with its caption."""
    import numpy as np

    from medrepro.publish.outputs import Context
    from medrepro.publish.paper import forest

    rng = np.random.default_rng(0)
    n = 40
    rep = rng.uniform(0.5, 0.9, n)
    comp = pd.DataFrame({"experiment": "e", "metric": [f"m{i}" for i in range(n)], "published": rep + 0.02,
                         "reproduced": rep, "ci_low": rep - 0.05, "ci_high": rep + 0.05,
                         "diff_low": -0.09, "diff_high": 0.05, "verdict": "inconclusive"})
    counts = comp.head(3).assign(metric="correct", published=418.0, reproduced=20.0)
    unjudged = comp.head(2).assign(verdict="no interval (a training-curve or selection value)")
    ctx = Context("p", {}, {}, None, "demo", tmp_path)
    paths, captions = forest(ctx, pd.concat([comp, counts, unjudged], ignore_index=True), "p")
    assert sorted(captions) == ["forest"] and {p.name for p in paths} == {"forest.png", "forest.pdf"}  # 40 rates
    assert "counts are in the comparison table" in captions["forest"]
    paths, captions = forest(ctx, pd.concat([comp, comp.head(1)], ignore_index=True), "p")
    assert sorted(captions) == ["forest_1", "forest_2"]  # 41 rates: 40 + 1
