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
