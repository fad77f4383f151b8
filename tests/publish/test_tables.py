"""How tables print: counts as integers, learning rates in full, published values as transcribed."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

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


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (Debian: texlive-latex-base)")
def test_latex_tables_fit_the_page_and_keep_every_row(tmp_path):
    """A wide table is scaled to the text width, a long one breaks across pages (longtable) in a
    font that fits, a long and wide one turns the page; none overflows (no overfull box in
    LaTeX's log) and none is cut at the page's foot (no float too large for the page)."""
    import re
    import subprocess

    from medrepro.tables import LATEX_PACKAGES

    rng = np.random.default_rng(0)
    wide = pd.DataFrame({f"a rather long column {i}": rng.random(5) for i in range(14)})
    long = pd.DataFrame({"metric": [f"row{i}" for i in range(120)], "value": rng.random(120)})
    both = pd.DataFrame({"metric": [f"best batch size: VGG16, batch 32, stage 2, row{i}" for i in range(200)],
                         **{f"column {i}": rng.random(200) for i in range(11)}})
    texts = {}
    for name, df in (("wide", wide), ("long", long), ("both", both)):
        texts[name] = write_table(df, tmp_path / name, caption=f"{name} table", note="demo scale")[2].read_text()
    assert "\\resizebox{\\linewidth}" in texts["wide"] and "\\begin{longtable}" not in texts["wide"]
    assert "\\begin{longtable}" in texts["long"] and "landscape" not in texts["long"]
    assert "\\begin{landscape}" in texts["both"] and "\\begin{longtable}" in texts["both"]
    doc = tmp_path / "doc.tex"
    doc.write_text(f"\\documentclass{{article}}\n\\usepackage{{{','.join(LATEX_PACKAGES)}}}\n\\begin{{document}}\n"
                   + "".join(f"\\input{{{n}.tex}}\n\\clearpage\n" for n in texts) + "\\end{document}\n")
    out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:]
    log = (tmp_path / "doc.log").read_text(errors="replace")
    over = [float(x) for x in re.findall(r"Overfull \\hbox \((\d+\.?\d*)pt too wide\)", log)]
    assert not [x for x in over if x > 1.0], over
    pages = int(re.search(r"Output written on doc.pdf \((\d+) pages", log)[1])
    assert pages >= 1 + 3 + 4  # wide: 1 page; long: 120 rows over several; both: 200 rows over several
    assert "Float too large for page" not in log
    from ..conftest import pdf_page_sizes, pdf_rows_missing

    assert pdf_page_sizes(tmp_path / "doc.pdf") == {(612.0, 792.0), (792.0, 612.0)}   # the long and wide one turned
    assert not pdf_rows_missing(tmp_path / "doc.pdf", [tmp_path / f"{n}.tex" for n in texts])
    # a table cut short is caught: a float holds what a page holds and drops the rest
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "long.md").write_text((tmp_path / "long.md").read_text())
    (cut / "doc.tex").write_text(
        f"\\documentclass{{article}}\n\\usepackage{{{','.join(LATEX_PACKAGES)}}}\n\\begin{{document}}\n"
        "\\begin{table}\\begin{tabular}{lr}\n"
        + "".join(f"row{i} & 0.5 \\\\\n" for i in range(120)) + "\\end{tabular}\\end{table}\n\\end{document}\n")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "doc.tex"], cwd=cut, capture_output=True, timeout=300)
    lost = pdf_rows_missing(cut / "doc.pdf", [cut / "long.tex"])
    assert lost and sum(n - found for _, n, found in lost[str(cut / "long.tex")]) > 50


def test_a_number_printed_in_several_tables_is_one_comparison_row():
    """The same published value for the same evaluation (whatever path reaches it) is one row; the
    other tables are listed; a misprint, or another quantity, stays a row of its own."""
    from medrepro.publish.compare import also_labels, merge_repeated, merged_rows, quantity_key
    from medrepro.specs import CompareRow

    run = {"accuracy": 0.8, "f1": 0.7, "n": 10}
    metrics = {"stage1": {"best_per_backbone": {"vgg16": {"test": run, "batch_size": 32}},
                          "runs": {"vgg16": {"bs32": {"test": dict(run)}, "bs64": {"test": {**run, "accuracy": 0.6}}}}},
               "stage2": {"test": {"accuracy": 0.8}}}
    published = {"reported": {"t51": {"acc": 0.93, "f1": 0.9}, "tB1": {"bs32": 0.93, "bs64": 0.93}, "t55": 0.93,
                              "typo": 0.39}}
    rows = [CompareRow(metric="Table 5.1 VGG: accuracy", reproduced="stage1.best_per_backbone.vgg16.test.accuracy",
                       published="reported.t51.acc", experiment="s"),
            CompareRow(metric="Table 5.1 VGG: f1", reproduced="stage1.best_per_backbone.vgg16.test.f1",
                       published="reported.t51.f1", experiment="s"),
            CompareRow(metric="Table B.1 VGG 32: accuracy", reproduced="stage1.runs.vgg16.bs32.test.accuracy",
                       published="reported.tB1.bs32", experiment="s"),
            CompareRow(metric="Table B.1 VGG 64: accuracy", reproduced="stage1.runs.vgg16.bs64.test.accuracy",
                       published="reported.tB1.bs64", experiment="s"),
            CompareRow(metric="Table 5.5 a: accuracy", reproduced="stage2.test.accuracy",
                       published="reported.t55", experiment="s"),
            CompareRow(metric="Table B.1 VGG 32 again: accuracy", reproduced="stage1.runs.vgg16.bs32.test.accuracy",
                       published="reported.typo", experiment="s")]
    assert quantity_key(metrics, rows[0].reproduced) == quantity_key(metrics, rows[2].reproduced)
    assert quantity_key(metrics, rows[0].reproduced) != quantity_key(metrics, rows[3].reproduced)
    groups = merge_repeated(rows, published, {"s": metrics})
    assert [[c.metric for c in g] for g in groups] == [
        ["Table 5.1 VGG: accuracy", "Table B.1 VGG 32: accuracy"], ["Table 5.1 VGG: f1"],
        ["Table B.1 VGG 64: accuracy"],   # another run, though the same published value
        ["Table 5.5 a: accuracy"],        # another evaluation that happens to score the same
        ["Table B.1 VGG 32 again: accuracy"]]   # the same run, another published value: a misprint stays
    assert also_labels(groups[0]) == "Table B.1 VGG 32" and also_labels(groups[1]) == ""
    assert merged_rows(groups)["reported.tB1.bs32"] == "s: Table 5.1 VGG: accuracy"


def test_a_column_left_out_of_the_latex_stays_in_the_csv_and_markdown(tmp_path):
    df = pd.DataFrame({"metric": ["a", "b"], "value": [0.5, 0.25], "also": ["Table 5.6; Table 5.7", ""]})
    csv, md, tex = write_table(df, tmp_path / "comparison", caption="published vs reproduced", note="demo",
                               tex_drop=("also",))
    assert "also" in csv.read_text() and "Table 5.7" in md.read_text()
    assert "Table 5.7" not in tex.read_text() and "& also" not in tex.read_text()
    assert re.search(r"column also in comparison\.(\\allowbreak\{\})?csv", tex.read_text())
