"""A paper's outputs directory: every output listed in ``papers.<name>.outputs``
(:mod:`medrepro.publish.outputs`), the comparison with the published numbers, the coverage of every
transcribed number, the headline metrics against chance and the departures
(:mod:`medrepro.publish.compare`), and the captions the HTML report reads.  No paper is
special-cased: a paper is the list of its outputs.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from ..config import scale_note
from ..io import atomic_dir, write_json, write_text
from ..specs import output_spec
from .compare import comparison_table, coverage_table, departures_table, expand_table_comparisons, headline_table
from .outputs import OUTPUTS, Context


def publish_paper(paper: str, paper_cfg: dict, inputs: dict, out_dir, style: dict | None = None,
                  scale: str = "demo", captions: dict | None = None) -> list[Path]:
    """Write every output of ``paper_cfg['outputs']`` and the comparison into ``out_dir`` (replaced whole).

    ``captions`` (:func:`medrepro.publish.html.captions`; computed from the config when not given)
    go to ``captions.json``, which the HTML report reads.

    ``inputs`` maps experiment -> {"metrics", "history", "model_summary", "split"} paths.
    """
    out_dir = Path(out_dir)
    from ..provenance import record, short

    note = scale_note(scale)
    prov = record(paper_cfg)
    line = short(prov)
    published = yaml.safe_load(Path(paper_cfg["published"]).read_text())
    labels = paper_cfg["class_labels"]
    default_exp = paper_cfg["experiments"][0]
    written: list[Path] = []
    outputs = [output_spec(o, f"papers.{paper}.outputs[{i}]") for i, o in enumerate(paper_cfg["outputs"])]
    layouts = {o.name: o.layout for o in outputs if o.layout}
    with atomic_dir(out_dir) as tmp:
        for o in outputs:
            exp = o.experiment or default_exp
            for e in [exp, *(o.experiments or ())]:
                if e not in inputs:
                    raise ValueError(f"papers.{paper}.outputs {o.name}: experiment {e!r} is not one of the "
                                     f"paper's experiments {list(inputs)}")
            ctx = Context(paper, inputs[exp], labels, style, note, tmp, inputs, line, experiment=exp, layouts=layouts)
            written += OUTPUTS[o.kind](ctx, o)
        comps, results = [], {}
        metrics_all = {exp: json.loads(Path(inputs[exp]["metrics"]).read_text()) for exp in paper_cfg["experiments"]}
        compare = [{**c, "experiment": c.get("experiment", default_exp)} for c in paper_cfg["compare"]]
        extra, skipped = expand_table_comparisons(paper_cfg["compare_tables"], published, metrics_all,
                                                  where=f"papers.{paper}.compare_tables")
        seen = {c["published"] for c in compare}
        for r in extra:   # a value an explicit row already compares is not compared twice
            if r["published"] not in seen:
                seen.add(r["published"])
                compare.append(r)
        for exp in paper_cfg["experiments"]:
            metrics = metrics_all[exp]
            results[exp] = metrics.get("provenance")
            comp = comparison_table(metrics, published, [c for c in compare if c["experiment"] == exp],
                                    where=f"papers.{paper}.compare", scale=scale)
            comp.insert(0, "experiment", exp)
            comps.append(comp)
        ctx = Context(paper, {}, labels, style, note, tmp, provenance=line)
        written += ctx.table(pd.concat(comps, ignore_index=True), "comparison", "published vs reproduced")
        cov = coverage_table(published, compare, paper_cfg["not_compared"]
                             + [{"published": p, "reason": r, "detail": d} for p, r, d in skipped])
        n_done = int((cov["status"] == "compared").sum())
        written += ctx.table(cov, "published_values",
                             f"every transcribed number: {n_done} of {len(cov)} set beside a reproduced value")
        if paper_cfg.get("headline"):
            for h in paper_cfg["headline"]:
                if h["experiment"] not in inputs:
                    raise ValueError(f"papers.{paper}.headline {h['metric']!r}: experiment {h['experiment']!r} is not "
                                     f"one of the paper's experiments {list(inputs)}")
            metrics_by_exp = {e: json.loads(Path(inputs[e]["metrics"]).read_text())
                              for e in {h["experiment"] for h in paper_cfg["headline"]}}
            written += ctx.table(headline_table(metrics_by_exp, paper_cfg["headline"]), "headline",
                                 "headline metrics against chance (the most frequent class of the same test set)")
        write_json(tmp / "provenance.json", {"publish": prov, "experiments": results})
        written.append(tmp / "provenance.json")
        if captions is None:
            from .html import captions as make_captions
            captions = make_captions(paper_cfg, published)
        write_json(tmp / "captions.json", captions)
        written.append(tmp / "captions.json")
        if paper_cfg.get("departures"):
            written += ctx.table(departures_table(paper_cfg["departures"]), "departures",
                                 "where this reproduction departs from the paper")
        incons = published.get("inconsistencies", [])
        write_text(tmp / "inconsistencies.md", "# Inconsistencies in the published paper\n\n"
                   + "".join(f"- {x}\n" for x in incons)
                   + (f"\n{published['note']}\n" if published.get("note") else ""))
        written = [out_dir / p.relative_to(tmp) for p in written]
    return written
