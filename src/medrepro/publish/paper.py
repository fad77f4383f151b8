"""A paper's outputs directory: every output listed in ``papers.<name>.outputs``
(:mod:`medrepro.publish.outputs`), the comparison with the published numbers, the coverage of every
transcribed number, the headline metrics against chance and the departures
(:mod:`medrepro.publish.compare`), and the captions the HTML report reads.  No paper is
special-cased: a paper is the list of its outputs.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import yaml

from ..io import atomic_dir, write_json, write_text
from ..specs import paper_spec
from ..tables import scale_note
from .compare import (
    also_labels,
    calibration_table,
    comparison_table,
    coverage_table,
    departures_table,
    expand_table_comparisons,
    headline_table,
    merge_repeated,
    merged_rows,
    published_test_size,
)
from .html import FIXED as FIXED_CAPTIONS
from .outputs import OUTPUTS, Context


def reliability(predictions_csv, title: str):
    """The reliability diagram of a classifier's test predictions (:func:`medrepro.figures.reliability_figure`)."""
    from ..figures import reliability_figure

    pred = pd.read_csv(predictions_csv, dtype={"image_id": str})
    test = pred[pred["split"] == "test"]
    proba = test[[c for c in test.columns if c.startswith("prob_")]].to_numpy(float)
    return reliability_figure(test["target"], proba, test["pred"], title)


def forest(ctx, comparison: pd.DataFrame, paper: str) -> tuple[list[Path], dict[str, str]]:
    """Forest plots of the judged comparison rows of rates (:func:`medrepro.figures.forest_figure`),
    :data:`~medrepro.figures.FOREST_ROWS` rows a figure (``forest``, or ``forest_1``, ``forest_2``,
    ...); returns their files and captions."""
    from ..figures import FOREST_ROWS, forest_figure

    # rates only, on one 0-1 axis (counts, on the scale of each test set, stay in the table)
    judged = comparison[comparison["verdict"].isin(["consistent", "different", "inconclusive"])
                        & comparison["published"].between(0, 1) & comparison["reproduced"].between(0, 1)]
    parts = [judged.iloc[i:i + FOREST_ROWS] for i in range(0, len(judged), FOREST_ROWS)]
    paths, captions = [], {}
    for k, part in enumerate(parts, 1):
        name = "forest" if len(parts) == 1 else f"forest_{k}"
        which = "" if len(parts) == 1 else f" (rows {FOREST_ROWS * (k - 1) + 1}-{FOREST_ROWS * (k - 1) + len(part)} "
        which += "" if len(parts) == 1 else f"of {len(judged)})"
        paths += ctx.figure(forest_figure(part, f"{paper}: published and reproduced{which}"), name)
        captions[name] = ("Each judged comparison row of a rate (counts are in the comparison table): the "
                          "reproduced value with its 95 % interval (filled) and "
                          "the published one with its own (open), the row's label coloured by its verdict "
                          "(green consistent, vermilion different, grey inconclusive).")
    return paths, captions


def publish_paper(paper: str, paper_cfg: dict, inputs: dict, out_dir, *, style: dict | None = None,
                  scale: str = "demo", captions: dict | None = None, verdict: dict | None = None) -> list[Path]:
    """Write every output of ``paper_cfg['outputs']`` and the comparison into ``out_dir`` (replaced whole).

    ``captions`` (:func:`medrepro.publish.html.captions`; computed from the config when not given)
    go to ``captions.json``, which the HTML report reads.  ``verdict`` is the config's
    ``{margin, confidence}`` of the comparison's verdicts.

    ``paper_cfg`` is the validated ``papers.<paper>`` block (its departures resolved:
    :func:`medrepro.departures.resolved_departures`), read as a :class:`medrepro.specs.PaperSpec`.
    ``inputs`` maps experiment -> {"metrics", "history", "model_summary", "split"} paths.
    """
    out_dir = Path(out_dir)
    from ..provenance import record, short

    note = scale_note(scale)
    # the tables' config digest covers the paper block and the config digest of every run they read
    # (each run's metrics.json records its own), so a changed experiment changes the footer too
    run_digests = {e: (json.loads(Path(f["metrics"]).read_text()).get("provenance") or {}).get("config_sha256")
                   for e, f in sorted(inputs.items()) if "metrics" in f}
    prov = record({"paper": paper_cfg, "runs": run_digests})
    line = short(prov)
    spec = paper_spec(paper_cfg, f"papers.{paper}")
    published = yaml.safe_load(Path(spec.published).read_text())
    labels = dict(spec.class_labels)
    layouts = {o.name: o.layout for o in spec.outputs if o.layout}
    known = _known(paper, inputs)
    with atomic_dir(out_dir) as tmp:
        written: list[Path] = []
        for o in spec.outputs:
            exp = o.experiment or spec.experiments[0]
            for e in [exp, *(o.experiments or ())]:
                known(e, f"outputs {o.name}")
            ctx = Context(paper, inputs[exp], labels, style, note, tmp, all_files=inputs, provenance=line,
                          experiment=exp, layouts=layouts)
            written += OUTPUTS[o.kind](ctx, o)
        metrics_all = {exp: json.loads(Path(inputs[exp]["metrics"]).read_text()) for exp in spec.experiments}
        ctx = Context(paper, {}, labels, style, note, tmp, provenance=line)
        paths, forest_captions = _comparison_outputs(ctx, paper, spec, published, metrics_all, verdict)
        written += paths
        if spec.headline:
            for h in spec.headline:
                known(h.experiment, f"headline {h.metric!r}")
            written += ctx.table(headline_table({e: metrics_all[e] for e in {h.experiment for h in spec.headline}},
                                                spec.headline), "headline",
                                 "headline metrics against chance (the most frequent class of the same test set)")
        paths, figure_captions = _calibration_outputs(ctx, paper, spec, metrics_all, inputs)
        written += paths
        write_json(tmp / "provenance.json",
                   {"publish": prov, "experiments": {e: metrics_all[e].get("provenance") for e in spec.experiments}})
        if captions is None:
            from .html import captions as make_captions
            captions = make_captions(spec, published)
        write_json(tmp / "captions.json", {**captions, **figure_captions, **forest_captions})
        written += [tmp / "provenance.json", tmp / "captions.json"]
        if spec.departures:
            written += ctx.table(departures_table(spec.departures), "departures",
                                 "where this reproduction departs from the paper")
        write_text(tmp / "inconsistencies.md", "# Inconsistencies in the published paper\n\n"
                   + "".join(f"- {x}\n" for x in published.get("inconsistencies", []))
                   + (f"\n{published['note']}\n" if published.get("note") else ""))
        written = [out_dir / p.relative_to(tmp) for p in written]
    return written


def _known(paper: str, inputs: dict):
    def known(exp: str, what: str) -> None:
        if exp not in inputs:
            raise ValueError(f"papers.{paper}.{what}: experiment {exp!r} is not one of the paper's experiments "
                             f"{list(inputs)}")
    return known


def _comparison_outputs(ctx, paper: str, spec, published: dict, metrics_all: dict, verdict) -> tuple[list, dict]:
    """The comparison table (one row per published number: a value the paper prints in several
    tables for the same quantity of the same run is one row, its other tables under ``also``), its
    forest plots and the coverage of every transcribed number; (paths, the forest plots' captions)."""
    default_exp = spec.experiments[0]
    compare = [dataclasses.replace(c, experiment=c.experiment or default_exp) for c in spec.compare]
    extra, skipped = expand_table_comparisons(spec.compare_tables, published, metrics_all,
                                              where=f"papers.{paper}.compare_tables")
    seen = {c.published for c in compare}
    for r in extra:   # a value an explicit row already compares is not compared twice
        if r.published not in seen:
            seen.add(r.published)
            compare.append(r)
    merged = merge_repeated(compare, published, metrics_all)
    comps = []
    for exp in spec.experiments:
        mine = [g for g in merged if g[0].experiment == exp]
        comp = comparison_table(metrics_all[exp], published, [g[0] for g in mine],
                                where=f"papers.{paper}.compare", verdict=verdict,
                                published_n=published_test_size(spec.published_test_size, published, exp))
        comp.insert(0, "experiment", exp)
        comp["also"] = [also_labels(g) for g in mine]
        comps.append(comp)
    comparison = pd.concat(comps, ignore_index=True)
    # the LaTeX leaves out `also` (the other tables of a value printed in several): no page holds it
    written = ctx.table(comparison, "comparison", "published vs reproduced", tex_drop=("also",))
    forest_paths, forest_captions = forest(ctx, comparison, paper)
    cov = coverage_table(published, compare, spec.not_compared, skipped, merged_rows(merged))
    n_done = int((cov["status"] == "compared").sum())
    written += forest_paths + ctx.table(
        cov, "published_values", f"every transcribed number: {n_done} of {len(cov)} set beside a reproduced value")
    return written, forest_captions


def _calibration_outputs(ctx, paper: str, spec, metrics_all: dict, inputs: dict) -> tuple[list, dict]:
    """Calibration, which no paper reported: every classifier experiment's test probabilities and
    each study's best configuration, a table and a reliability diagram each; (paths, captions)."""
    calibrated, files = {}, {}
    for e in spec.experiments:
        m = metrics_all[e]
        if "brier" in m.get("test", {}) and "predictions" in inputs[e]:
            calibrated[e], files[e] = (m, "test"), inputs[e]["predictions"]
        elif "brier" in m.get("best", {}):
            calibrated[e], files[e] = (m, "best"), inputs[e][f"stage{m['best']['stage']}_predictions"]
    if not calibrated:
        return [], {}
    written = ctx.table(calibration_table(calibrated), "calibration", FIXED_CAPTIONS["calibration"])
    captions = {}
    for e, f in files.items():
        m, at = calibrated[e]
        which = f"{e}, test" if at == "test" else f"{e}, best: stage {m['best']['stage']}"
        written += ctx.figure(reliability(f, f"{paper}: reliability ({which})"), f"reliability_{e}")
        captions[f"reliability_{e}"] = (
            f"Reliability diagram ({which}): accuracy against the predicted class's probability on "
            "the test images, in the bins of the expected calibration error. Not reported by the paper.")
    return written, captions
