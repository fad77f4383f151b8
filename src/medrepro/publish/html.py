"""The browsable report: captions for every table and figure, and a standalone HTML site.

:func:`captions` says, for each of a paper's outputs, what it shows and which of the paper's
numbered tables or figures it reproduces (with the paper's own description of it, from the
paper's YAML); :func:`medrepro.publish.paper.publish_paper` writes them to ``captions.json`` and
Snakemake's ``--report`` shows them (``workflow/report/output.rst``).

:func:`write_site` turns ``report.md`` and each paper's folder into ``html/index.html`` and one
page per paper (Markdown rendered with markdown-it-py, pages by jinja2 templates): the comparison, learning check, audit
and departures, then every table and every figure with its caption.  Pages link to the files in
the results folder by relative paths, so the folder can be moved or zipped whole.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..specs import PaperSpec

WHAT = {
    "classification_report": "precision, recall, F1 and support per class",
    "confusion_matrix": "confusion matrix",
    "learning_curves": "training and validation curves per epoch",
    "history": "the per-epoch log (loss, accuracy, validation loss and accuracy, learning rate)",
    "model_summary": "layers, output shapes and parameters",
    "class_counts": "images per class and split",
    "sample_grid": "a grid of random images of one class",
    "intensity_histogram": "one image beside its pixel-intensity histogram",
    "metrics_table": "test metrics of the experiments",
    "roc_curve": "ROC curve with its AUC",
    "equalization": "an image before and after histogram equalisation, with histograms and cumulative distributions",
    "mask_overlay": "annotated mask, predicted mask, their union and intersection",
    "iou_distribution": "per-image IoU over the test images: histogram and box plot",
    "detection_confusion": "image-level confusion matrices (pneumonia vs healthy)",
    "study_split_counts": "images per class and split",
    "study_runs": "one row per run: macro recall, precision, F1, accuracy, correct and incorrect test images",
    "stage_comparison": "macro metrics before (a) and after (b) the stage",
    "stage_per_class": "per-class precision, recall and F1 before (a) and after (b) the stage",
    "study_best": "the best configuration per dataset",
    "fine_tune_parameters": "parameters in total, trainable when frozen and when fine-tuning",
    "batch_size_bars": "recall, precision, F1 and accuracy per backbone and batch size",
    "lr_curve": "test metrics against the learning rate",
    "stage_confusion": "confusion matrices before and after the stage",
    "study_learning_curves": "learning curves of the selected configuration per dataset",
    "prediction_examples": "test images with true class, predicted class and probability, correct and wrong",
    "augmentation_examples": "one image and augmented versions of it",
}
FIXED = {
    "comparison": "Published against reproduced: each value with its 95 % bootstrap interval and a verdict.",
    "headline": "Headline metrics against chance (the most frequent class of the same test set).",
    "departures": "Where this reproduction departs from the paper, and which setting decides it.",
    "calibration": "Calibration of the test probabilities, which the paper did not report: Brier score and "
                   "expected calibration error (15 equal-width confidence bins), each with its 95 % bootstrap "
                   "interval.",
}


def _numbers(key: str) -> tuple[str, tuple[int, ...]] | None:
    m = re.match(r"(fig|table)([A-Z]?)(\d+(?:_\d+)*)", key)
    return (m.group(1) + m.group(2), tuple(int(x) for x in m.group(3).split("_"))) if m else None


def _paper_key(name: str, covers: list, published: dict) -> tuple[str | None, str | None]:
    """The key of the paper's numbered table or figure (in its YAML) that an output reproduces,
    and the paper's description of it; ``fig5_1_to_5_3`` covers ``fig5_2_...`` too."""
    keys = {**(published.get("figures") or {}), **{k: None for k in (published.get("reported") or {})}}
    for k in list(covers) + list(keys):
        desc = keys.get(k)
        desc = desc if isinstance(desc, str) else None
        if k in covers or name == k or name.startswith(k + "_"):
            return k, desc
        lo, _, hi = k.partition("_to_")
        if hi and _numbers(lo) and _numbers(name):
            (kind, a), (kind_n, n) = _numbers(lo), _numbers(name)
            b = _numbers(f"{kind}{hi}")[1]
            if kind == kind_n and len(a) == len(b) and a <= n[:len(a)] <= b:
                return k, desc
    return None, None


def captions(spec: PaperSpec, published: dict) -> dict[str, str]:
    """``{output name: caption}`` for a paper's configured outputs (its validated block or
    :class:`medrepro.specs.PaperSpec`) and its fixed tables."""
    out = {}
    for o in spec.outputs:
        exps = list(o.experiments or [o.experiment or spec.experiments[0]])
        what = WHAT.get(o.kind, o.kind.replace("_", " "))
        key, desc = _paper_key(o.name, o.covers or (), published)
        text = f"{what[0].upper()}{what[1:]} ({', '.join(exps)})."
        if key:
            text += f" Reproduces the paper's {key}" + (f": “{desc}”." if desc else ".")
        else:
            text += " Not a numbered table or figure of the paper."
        out[o.name] = text
    return {**out, **FIXED}


# ----------------------------------------------------------------------------- the site
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; vertical-align: top; }
th { background: #f2f2f2; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #444; } nav a { margin-right: 1rem; }
code { background: #f6f6f6; }
"""


LONG_TABLE_ROWS = 25  # longer tables are folded (<details>): the page stays readable


def _md(text: str) -> str:
    """Markdown as HTML, every table longer than :data:`LONG_TABLE_ROWS` rows folded under a
    summary that says how many rows it holds (a click opens it)."""
    from markdown_it import MarkdownIt

    html_text = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)

    def fold(m: re.Match) -> str:
        rows = m.group(0).count("<tr>") - 1  # the header row
        if rows <= LONG_TABLE_ROWS:
            return m.group(0)
        return f"<details><summary>{rows} rows (click to show)</summary>\n{m.group(0)}</details>"

    return re.sub(r"<table>.*?</table>", fold, html_text, flags=re.S)


_TEMPLATES = {
    "page.html": """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title><style>{{ css }}</style></head><body>
<nav><a href="index.html">index</a>{% for n in papers %}<a href="{{ n }}.html">{{ n }}</a>{% endfor %}</nav>
{% block body %}{% endblock %}
</body></html>
""",
    "index.html": """{% extends "page.html" %}{% block body %}{{ head|safe }}<h2>Papers</h2><ul>
{% for n in papers %}<li><a href="{{ n }}.html">{{ n }}</a></li>
{% endfor %}</ul>{{ tail|safe }}{% endblock %}""",
    "paper.html": """{% extends "page.html" %}{% block body %}{{ section|safe }}<h2>Tables</h2>
{% for t in tables %}<section id="table-{{ t.stem }}"><h3>{{ t.stem }}</h3><p>{{ t.caption }}
<a href="{{ t.dir }}/{{ t.stem }}.md">md</a> · <a href="{{ t.dir }}/{{ t.stem }}.csv">csv</a> ·
<a href="{{ t.dir }}/{{ t.stem }}.tex">tex</a>{% if not t.body %} (shown above){% endif %}</p>
{{ t.body|safe }}</section>
{% endfor %}<h2>Figures</h2>
{% for f in figures %}<figure id="figure-{{ f.stem }}"><img src="{{ f.png }}" alt="{{ f.caption or f.stem }}">
<figcaption><b>{{ f.stem }}</b>: {{ f.caption }}
{%- if f.pdf %} <a href="{{ f.pdf }}">pdf</a>{% endif %}</figcaption></figure>
{% endfor %}{% endblock %}""",
}


def _render(template: str, **context) -> str:
    """A page of the site by jinja2: every value escaped but the Markdown rendered to HTML (``|safe``)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.DictLoader(_TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(template).render(css=_CSS, **context)


def _sections(report_md: str) -> tuple[str, dict[str, str], str]:
    """report.md split into its head (before the first paper), each paper's section, and the rest."""
    parts = re.split(r"(?m)^## ", report_md)
    head, papers, tail = parts[0], {}, []
    for p in parts[1:]:
        title = p.split("\n", 1)[0]
        name = title.split(":", 1)[0].strip()
        if ":" in title and not title.startswith(("Audit", "Leakage", "Provenance")):
            papers[name] = "## " + p
        elif not papers:
            head += "## " + p
        else:
            tail.append("## " + p)
    return head, papers, "".join(tail)


def write_site(report_md, paper_dirs: dict, out_dir) -> list[Path]:
    """``out_dir/index.html`` (the report's head, the audit and leakage summaries, provenance, links)
    and ``out_dir/<paper>.html`` per paper; returns the pages written."""
    from ..io import atomic_dir, write_text

    out_dir = Path(out_dir)
    head, sections, tail = _sections(Path(report_md).read_text())
    names = list(paper_dirs)
    pages = []
    with atomic_dir(out_dir) as tmp:
        write_text(tmp / "index.html", _render("index.html", title="medrepro reproduction report", papers=names,
                                               head=_md(head), tail=_md(tail)))
        pages.append(out_dir / "index.html")
        for name in names:
            d = Path(paper_dirs[name])
            rel = Path(os.path.relpath(d, out_dir))
            caps = json.loads((d / "captions.json").read_text()) if (d / "captions.json").is_file() else {}
            section_md = sections.get(name, f"## {name}\n")
            tables = [{"stem": t.stem, "caption": caps.get(t.stem, ""), "dir": (rel / "tables").as_posix(),
                       # a table the report's section already prints (the comparison, ...) is printed once
                       "body": "" if t.read_text().strip() in section_md else _md(t.read_text())}
                      for t in sorted((d / "tables").glob("*.md"))]
            figures = [{"stem": f.stem, "caption": caps.get(f.stem, ""), "png": (rel / "figures" / f.name).as_posix(),
                        "pdf": (rel / "figures" / f"{f.stem}.pdf").as_posix() if f.with_suffix(".pdf").is_file()
                        else None} for f in sorted((d / "figures").glob("*.png"))]
            section = _md(_relink(section_md, rel))
            write_text(tmp / f"{name}.html", _render("paper.html", title=name, papers=names, section=section,
                                                     tables=tables, figures=figures))
            pages.append(out_dir / f"{name}.html")
    return pages


def _relink(section: str, rel: Path) -> str:
    """Backticked output paths of a paper section (``tables/x.md``) -> links relative to the page."""
    return re.sub(r"`((?:tables|figures)/[^`]+)`", lambda m: f"[`{m.group(1)}`]({(rel / m.group(1)).as_posix()})",
                  section)
