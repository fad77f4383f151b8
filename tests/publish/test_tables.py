"""How tables print: counts as integers, learning rates in full, published values as transcribed."""
from __future__ import annotations

import pandas as pd

from medrepro.tables import full_number, write_table


def test_counts_rates_and_published_values_print_as_a_reader_expects(tmp_path):
    df = pd.DataFrame({"metric": ["a", "b", "c"], "published": [0.8622, 0.97, 426],
                       "reproduced": [0.81234, 1.0, 27.0], "correct": [426.0, 33.0, None],
                       "recall": [1.0, 0.0, 1.0], "lr": [full_number(x) for x in (1e-05, 0.001, 0.1)]})
    paths = write_table(df, tmp_path / "t", caption="c")
    md = paths[1].read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()[4:7]]
    assert rows[0] == ["a", "0.8622", "0.812", "426", "1.000", "0.00001"]
    assert rows[1] == ["b", "0.97", "1.000", "33", "0.000", "0.001"]
    assert rows[2] == ["c", "426", "27", "", "1.000", "0.1"]
    back = pd.read_csv(paths[0])   # the CSV keeps the numbers
    assert back["published"].tolist() == [0.8622, 0.97, 426] and back["correct"].iloc[0] == 426
    tex = paths[2].read_text()
    assert "0.00001" in tex and "426 &" in tex.replace("  ", " ")


def test_table_patterns_compare_every_published_number_or_say_why_not():
    from medrepro.publish.compare import coverage_table, expand_table_comparisons, lookup

    published = {"datasets": {"TC": {"classes": {0: "a", 1: "b"}}},
                 "reported": {"tableB1_TC": {"VGG-16": {32: [0.9, 0.8, 0.85], 256: [0.7, 0.6, 0.65]}},
                              "per_class": {"TC": {"b": {"per_class": [[0.5, 0.4], [0.3, 0.2]]}}},
                              "note_value": 7}}
    metrics = {"tm_TC": {"stage1": {"runs": {"vgg16.bs32": {"test": {"recall": 0.91, "precision": 0.79, "f1": 0.84}}}},
                         "stage4": {"test": {"per_class": {"a": {"precision": 0.55, "recall": 0.45},
                                                           "b": {"precision": 0.35, "recall": 0.25}}}}}}
    assert lookup(metrics["tm_TC"], "stage1.runs.vgg16.bs32.test.f1") == 0.84   # a key holding a dot
    entries = [
        {"experiment": "tm_{ds}", "published": "reported/tableB{n}_{ds}/{model}/{batch_size}/{column}",
         "reproduced": "stage1.runs.{backbone}.bs{batch_size}.test.{metric}",
         "metric": "B{n} {model} {batch_size} {metric}",
         "derive": {"backbone": {"from": "model", "map": {"VGG-16": "vgg16"}},
                    "metric": {"from": "column", "map": ["recall", "precision", "f1"]}}},
        {"experiment": "tm_{ds}", "published": "reported/per_class/{ds}/{stage}/per_class/{cls}/{column}",
         "reproduced": "{run}.test.per_class.{name}.{metric}", "metric": "{name} {metric}",
         "derive": {"run": {"from": "{stage}x", "map": {"bx": "stage4"}},
                    "name": {"from": "cls", "map": "datasets/{ds}/classes"},
                    "metric": {"from": "column", "map": ["precision", "recall"]}}}]
    rows, skipped = expand_table_comparisons(entries, published, metrics)
    got = {r.published: (r.reproduced, r.metric) for r in rows}
    assert got["reported.tableB1_TC.VGG-16.32.2"] == ("stage1.runs.vgg16.bs32.test.f1", "B1 VGG-16 32 f1")
    assert got["reported.per_class.TC.b.per_class.1.0"] == ("stage4.test.per_class.b.precision", "b precision")
    assert [p for p, _, _ in skipped] == [f"reported.tableB1_TC.VGG-16.256.{i}" for i in range(3)]
    assert "not run in this configuration" in skipped[0][1]
    assert skipped[0][2] == "tm_TC: stage1.runs.vgg16.bs256.test.recall"
    cov = coverage_table(published, rows, [], skipped)
    assert len(cov) == 3 + 3 + 4 + 1 and (cov["status"] == "compared").sum() == 7
    cov = cov.set_index("published path")
    assert cov.loc["reported.note_value", "reason"] == "no comparison row configured"
    assert cov.loc["reported.tableB1_TC.VGG-16.256.0", "row or detail"] == "tm_TC: stage1.runs.vgg16.bs256.test.recall"


def test_repeats_table_gives_mean_and_sd_over_the_runs(tmp_path):
    import json

    import numpy as np

    from medrepro.publish.compare import repeats_table

    files = []
    for k, acc in enumerate([0.8, 0.9, 0.7]):
        f = tmp_path / f"m{k}.json"
        f.write_text(json.dumps({"test": {"accuracy": acc}}))
        files.append(str(f))
    t = repeats_table([{"experiment": "e", "metric": "acc", "reproduced": "test.accuracy", "chance": "c"},
                       {"experiment": "other", "metric": "x", "reproduced": "test.accuracy", "chance": "c"}],
                      {"e": files})
    row = t.iloc[0]
    assert len(t) == 1 and row["runs"] == 3 and row["values"] == "0.800, 0.900, 0.700"
    assert row["mean"] == np.mean([0.8, 0.9, 0.7]) and abs(row["sd"] - 0.1) < 1e-12
