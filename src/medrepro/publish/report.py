"""``results/report.md``: every paper's comparison, learning check, audit, departures and
provenance, the leakage audit and the seed repeats, in one Markdown report."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..io import write_text
from ..specs import paper_spec
from ..tables import scale_note

HOW_JUDGED = (
    "Each comparison row gives the reproduced value's 95 % interval (`ci_low`, `ci_high`: a percentile "
    "bootstrap over the test images, resampled by patient where patient ids exist, `bootstrap` in the "
    "config; where every resample gives the same 0 or 1, Clopper-Pearson's exact interval; counts get "
    "integer bounds and the test set's totals none) and what it rests on (`interval`: resamples and units, "
    "flagged under 20 units). The published value is an estimate too, made on the paper's test set: its "
    "error is binomial (Wilson) for a proportion on the paper's test-set size "
    "(`papers.<paper>.published_test_size`), this test set's error scaled to that size for any other "
    "metric, or none where the paper gives no size (`published error`). The difference, reproduced minus "
    "published, gets a normal interval with both errors (`diff_low`, `diff_high`), and the verdict is "
    "**different** when it excludes 0, **consistent** when the two one-sided tests put it within the "
    "equivalence margin (`verdict.margin` in the config), **inconclusive** otherwise. Values read off a "
    "training curve or a selection have no interval. Binary AUCs also carry DeLong's interval in their "
    "`metrics.json` (`ci_delong`). On the demo's synthetic stand-ins the verdicts exercise the method; "
    "they say nothing about the papers.")
AUDIT_METHOD = (
    "Arithmetic each paper's own tables must satisfy, checked on the transcribed numbers alone "
    "(`medrepro.publish.audit`; what relates to what is declared under `audit` in each paper's YAML): F1 "
    "against precision and recall, accuracy against the correct and total counts, correct + incorrect "
    "= total, parts against totals, macro averages against the per-class rows, split fractions "
    "against the counts, the same quantity printed twice, and binary scores against one confusion "
    "matrix of the stated size (mlscorecheck). A value passes when it lies within half a unit of its "
    "last printed digit. Each paper's section lists what does not hold; every check is in "
    "`audit/<paper>/checks.csv`.")
LEAKAGE_METHOD = (
    "For every experiment's and study's split: patients in more than one split (the split's own "
    "audit, after its overlap handling, and before it), pictures on both sides of a split, "
    "byte-identical or near-duplicates (perceptual hash, `medrepro.leakage`), and the same picture "
    "under two labels; datasets known to reuse one another are compared with each other. "
    "Nothing is removed: the pairs are in `leakage/audit/pairs.csv`.")


def report(papers: dict, paper_dirs: dict, out_md, *, scale: str = "demo", audit_dirs: dict | None = None,
           leakage_dir=None, repeats_dir=None, inflation_dir=None, probes: dict | None = None,
           checklists_dir=None) -> None:
    """The reproduction report: every paper's (``papers``: the validated ``papers`` block)
    comparison table, the audit of its published tables (``audit_dirs``:
    :func:`medrepro.publish.audit.write_audit`'s folders), the leakage audit (``leakage_dir``:
    :func:`medrepro.leakage.write_leakage`'s folder), the leakage inflation (``inflation_dir``:
    :func:`medrepro.inflation.write_inflation`'s folder), the source probes beside the papers whose
    data they probe (``probes``: paper -> :func:`medrepro.probe.write_probe`'s folders) and where
    its outputs are; each paper's reporting checklists (``checklists_dir``:
    :func:`medrepro.publish.checklist.write_checklists`'s folder)."""
    audits = {name: json.loads((Path(d) / "summary.json").read_text()) for name, d in (audit_dirs or {}).items()}
    lines = ["# medrepro reproduction report", "", f"_{scale_note(scale)}_", "",
             "### How a comparison is judged", "", HOW_JUDGED, ""]
    lines += ["## Summary", "", summary_table(papers, paper_dirs, audits).to_markdown(index=False), ""]
    if audits:
        lines += ["## Audit of the published tables", "", AUDIT_METHOD, "",
                  pd.DataFrame([{"paper": n, "checks": a["checks"], "inconsistent": a["inconsistent"]}
                                for n, a in audits.items()]).to_markdown(index=False), ""]
    if repeats_dir is not None and (Path(repeats_dir) / "repeats.md").is_file():
        lines += ["## Seed variation", "",
                  "Headline metrics of experiments rerun with other training seeds (`repeats` in the config): the "
                  "spread says how much of a difference from the published value one run can show by chance.", "",
                  (Path(repeats_dir) / "repeats.md").read_text(), ""]
    if leakage_dir is not None:
        lines += _leakage_section(Path(leakage_dir))
    if inflation_dir is not None:
        lines += inflation_section(Path(inflation_dir), list(papers))
    for name, block in papers.items():
        lines += _paper_section(name, paper_spec(block, f"papers.{name}"), Path(paper_dirs[name]),
                                (probes or {}).get(name, []), checklists_dir,
                                (audits.get(name), audit_dirs[name]) if name in audits else None)
    lines += provenance_section(paper_dirs)
    write_text(out_md, "\n".join(lines))


def _leakage_section(ld: Path) -> list[str]:
    lines = ["## Leakage audit", "", LEAKAGE_METHOD, "", (ld / "leakage.md").read_text(), ""]
    if (ld / "planted.md").is_file():
        lines += ["The demo's synthetic stand-ins plant copies for the audit to find:", "",
                  (ld / "planted.md").read_text(), ""]
    return lines


def _paper_section(name: str, cfg, d: Path, probe_dirs: list, checklists_dir, audit) -> list[str]:
    """A paper's section: its comparison, source probes, coverage of the published values, learning
    check, calibration, checklists, departures, what is not produced, its tables' inconsistencies and
    audit (``audit``: its summary and folder, or None), and its outputs."""
    lines = [f"## {name}: {cfg.title or ''}", ""]
    comp = d / "tables" / "comparison.md"
    if comp.is_file():
        forests = sorted((d / "figures").glob("forest*.png"))
        lines += [verdict_counts(pd.read_csv(d / "tables" / "comparison.csv"))
                  + (" Forest plot" + ("s" if len(forests) > 1 else "") + ": "
                     + ", ".join(f"`figures/{f.name}`" for f in forests) + "." if forests else ""),
                  "", comp.read_text(), ""]
    for probe_dir in probe_dirs:
        lines += probe_section(Path(probe_dir))
    lines += _coverage_lines(d) + _headline_lines(d) + _calibration_lines(d)
    if checklists_dir is not None and (Path(checklists_dir) / f"{name}.csv").is_file():
        lines += checklist_section(Path(checklists_dir), name)
    dep = d / "tables" / "departures.md"
    if dep.is_file():
        lines += ["### Departures from the paper", "", dep.read_text(), ""]
    if cfg.not_produced:
        lines += ["### Not produced", ""] + [f"- `{x.name}`: {x.reason}" for x in cfg.not_produced] + [""]
    inc = d / "inconsistencies.md"
    if inc.is_file():
        lines += [inc.read_text().replace("# Inconsistencies", "### Inconsistencies"), ""]
    if audit is not None:
        lines += _audit_lines(*audit)
    files = sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file())
    return lines + ["Outputs: " + ", ".join(f"`{p}`" for p in files), ""]


def _coverage_lines(d: Path) -> list[str]:
    cov_csv = d / "tables" / "published_values.csv"
    if not cov_csv.is_file():
        return []
    cov = pd.read_csv(cov_csv)
    done = cov[cov["status"] == "compared"]
    rest = cov[cov["status"] != "compared"].groupby("reason", sort=False).size()
    others = "The others: " + "; ".join(f"{n} — {reason}" for reason, n in rest.items()) + ". " if len(rest) else ""
    return [f"**Published values: {len(done)} of {len(cov)} transcribed numbers are compared above.** "
            + others + "Every value and its status: `tables/published_values.csv`.", ""]


def _headline_lines(d: Path) -> list[str]:
    head = d / "tables" / "headline.csv"
    if not head.is_file():
        return []
    return ["### Learning check: headline metrics against chance", "", learning_check(pd.read_csv(head)), "",
            (d / "tables" / "headline.md").read_text(), ""]


def _calibration_lines(d: Path) -> list[str]:
    cal = d / "tables" / "calibration.csv"
    if not cal.is_file():
        return []
    c = pd.read_csv(cal)
    return ["### Calibration (not reported by the paper)", "",
            f"Expected calibration error {c['ece'].min():.3f} to {c['ece'].max():.3f} and Brier score "
            f"{c['brier'].min():.3f} to {c['brier'].max():.3f} over {len(c)} classifier(s); "
            "reliability diagrams: " + ", ".join(f"`figures/reliability_{e}.png`" for e in c["experiment"])
            + ".", "", (d / "tables" / "calibration.md").read_text(), ""]


def _audit_lines(a: dict, audit_dir) -> list[str]:
    lines = [f"### Audit of the published tables: {a['inconsistent']} of {a['checks']} checks do not hold", ""]
    if a["inconsistent"]:
        causes = Path(audit_dir) / "causes.md"
        if causes.is_file():
            lines += [f"The {a['inconsistent']} findings come from {a['causes']} most likely cause(s): for "
                      "each, the printed value whose change would make the most of them hold (greedily: "
                      "a value in more failing checks first, then one in fewer passing ones).", "",
                      causes.read_text(), ""]
        lines += [(Path(audit_dir) / "findings.md").read_text(), ""]
    return lines


def summary_table(papers: dict, paper_dirs: dict, audits: dict) -> pd.DataFrame:
    """One row per paper: its comparison rows by verdict, its learning check (headlines above
    chance by the interval's lower bound, of all) and the audit's findings (of its checks)."""
    rows = []
    for name in papers:
        d = Path(paper_dirs[name]) / "tables"
        comp = pd.read_csv(d / "comparison.csv") if (d / "comparison.csv").is_file() else pd.DataFrame(
            {"verdict": []})
        v = comp["verdict"].value_counts()
        row = {"paper": name, "compared": len(comp),
               **{k: int(v.get(k, 0)) for k in ("consistent", "different", "inconclusive")}}
        if (d / "headline.csv").is_file():
            h = pd.read_csv(d / "headline.csv")
            row["above chance"] = f"{int(above_chance(h).sum())} of {len(h)}"
        if name in audits:
            row["audit findings"] = f"{audits[name]['inconsistent']} of {audits[name]['checks']}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def verdict_counts(comp: pd.DataFrame) -> str:
    """The comparison's verdicts counted, in a line."""
    counts = comp["verdict"].value_counts()
    judged = [f"{int(counts.get(v, 0))} {v}" for v in ("consistent", "different", "inconclusive")]
    rest = int(len(comp) - sum(counts.get(v, 0) for v in ("consistent", "different", "inconclusive")))
    return (f"**Verdicts of {len(comp)} comparison rows: " + ", ".join(judged) + "**"
            + (f"; {rest} without a verdict (no interval or no published value)." if rest else "."))


def above_chance(h: pd.DataFrame) -> pd.Series:
    """Which headline rows clear chance: by the interval's lower bound, by the point estimate where
    there is no interval."""
    return h["CI above chance"].eq("yes") | (h["CI above chance"].eq("-") & h["above chance"].eq("yes"))


def learning_check(h: pd.DataFrame) -> str:
    """The learning check in words, decided by each interval's lower bound (a metric whose
    interval reaches down to chance has not shown that it learnt), by the point estimate where
    there is no interval."""
    clear = above_chance(h)
    point_only = h[~clear & h["above chance"].eq("yes")]
    below = h[h["above chance"] != "yes"]
    name = lambda rows: ", ".join(f"{r.experiment} ({r.metric})" for r in rows.itertuples())  # noqa: E731
    if clear.all():
        return f"All {len(h)} above chance, by their intervals' lower bounds."
    text = f"**{int(clear.sum())} of {len(h)} above chance by their intervals' lower bounds.**"
    if len(point_only):
        text += f" Above by the point estimate only (the interval reaches chance): {name(point_only)}."
    if len(below):
        text += f" At or below chance: {name(below)}."
    return text


def provenance_section(paper_dirs: dict) -> list[str]:
    """The report's last section: which commit, config, versions and machine made each result
    (from each paper's ``provenance.json``); results of more than one commit are said first."""
    from ..provenance import record

    rows = []
    for name, d in paper_dirs.items():
        f = Path(d) / "provenance.json"
        if not f.is_file():
            continue
        prov = json.loads(f.read_text())
        for exp, p in [("(tables)", prov["publish"])] + list(prov["experiments"].items()):
            p = p or {}
            trained = p.get("trained_on") or {}
            rows.append({"paper": name, "result": exp, "commit": (p.get("commit") or "-")[:12],
                         "uncommitted changes": {True: "yes", False: "no"}.get(p.get("dirty"), "-"),
                         "config": p.get("config_sha256") or "-", "torch": (p.get("versions") or {}).get("torch", "-"),
                         "trained on": " ".join(x for x in (trained.get("device"), trained.get("gpu"),
                                                            trained.get("cpu_capability")) if x and x != "None") or "-",
                         "threads": trained.get("threads") or p.get("threads") or "-"})
    now = record()
    head = ["## Provenance", "", f"Report written at commit {(now['commit'] or 'none (no git checkout)')[:12]}"
            + (" with uncommitted changes" if now["dirty"] else "") + "; python " + now["versions"]["python"]
            + ", " + ", ".join(f"{k} {v}" for k, v in now["versions"].items() if k != "python") + ".", ""]
    if not rows:
        return head
    table = pd.DataFrame(rows)
    commits = sorted(set(table["commit"]) - {"-"})
    if len(commits) > 1:
        head += [f"**The results come from {len(commits)} commits ({', '.join(commits)}): rerun to make them "
                 "consistent.**", ""]
    return head + [table.to_markdown(index=False), ""]


def inflation_section(inflation_dir: Path, papers: list[str]) -> list[str]:
    """The report's "Leakage inflation" section: the method, a line per pair and each paper's table."""
    table = pd.read_csv(inflation_dir / "inflation.csv")
    lines = ["## Leakage inflation", "",
             "What splitting by image instead of by patient adds to a score, measured (`inflation` in the config, "
             "`medrepro.inflation`): each listed run is trained twice with the same model, seed and budget on one "
             "image-level split, as a paper that split by image did: once as it is (the test patients' other images "
             "may be in train and val) and once with those images removed and train and val re-drawn by patient; "
             "both arms are drawn down to the same training and validation sizes and tested on the same images. "
             "Inflation = by image - by patient, with a paired percentile bootstrap interval over the test patients "
             "(both models scored on each resample). On the demo's stand-ins the brain-tumour slices of one patient "
             "share the scan (head, tumour site and shape, intensity), as real neighbouring slices do, while the "
             "Kermany stand-in draws each image of a child afresh: a control that should show no inflation.", ""]
    acc = table[table["metric"] == "accuracy"]
    lines += [f"- `{r.run}` ({r.dataset}): accuracy {r['split by image']:.3f} by image, {r['split by patient']:.3f} "
              f"by patient, inflation {r.inflation:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]: {r.reading}; "
              f"{r['test patients seen in training']} of {r['test patients']} test patients seen in training "
              f"or validation by the image split" for _, r in acc.iterrows()]
    lines.append("")
    for paper in papers:
        md = inflation_dir / f"{paper}.md"
        if md.is_file():
            lines += [f"### {paper}", "", md.read_text(), ""]
    return lines


def probe_section(probe_dir: Path) -> list[str]:
    """A paper's "Source probe" subsection: how far the collection alone decides the class, and
    whether the collection can be told from outside the lungs."""
    summary = json.loads((probe_dir / "summary.json").read_text())
    rows = pd.DataFrame(summary["rows"])
    found = rows[rows["reading"].str.startswith("source identifiable")]["images of"].tolist()
    return [f"### Source probe: {summary['dataset']} (shortcuts the paper did not test)", "",
            f"Guessing each image's class from its collection alone (the metadata's URL) is right for "
            f"{summary['class_from_collection_accuracy']:.1%} of the images. A logistic regression that sees only "
            "what lies outside the lungs (the lung masks grown by a few pixels and blanked) tells the collection "
            + (f"above the majority rate for: {', '.join(found)}." if found else
               "no better than the majority rate anywhere.")
            + " Where it can, a classifier may score by the collection (age group, equipment, markers) rather than "
            "the disease (DeGrave et al. 2021; Roberts et al. 2021). `probe/" + summary["dataset"] + "/`.", "",
            (probe_dir / "probe.md").read_text(), "", (probe_dir / "classes_by_source.md").read_text(), ""]


def checklist_section(checklists_dir: Path, paper: str) -> list[str]:
    """A paper's "Reporting checklists" subsection: how many items the paper and this reproduction
    report, then every item."""
    summ = pd.read_csv(checklists_dir / f"{paper}_summary.csv")
    said = "; ".join(f"{r.checklist}: the paper {r['paper: yes']} of {r['paper: applicable']} applicable items "
                     f"(and {r['paper: partly']} in part), this reproduction {r['reproduction: yes']} of "
                     f"{r['reproduction: applicable']} (and {r['reproduction: partly']} in part)"
                     for _, r in summ.iterrows())
    return ["### Reporting checklists (TRIPOD+AI, CLAIM 2024)", "",
            f"{said}. Every item, what the paper gives and which file of this reproduction answers it: "
            f"`checklists/{paper}.csv`.", "", (checklists_dir / f"{paper}.md").read_text(), ""]
