"""Captions for every output, and the HTML site opened in a real headless browser."""
from __future__ import annotations

import html
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from medrepro.publish.html import captions, write_site
from medrepro.specs import paper_spec
from medrepro.tables import write_table

from ..conftest import REPO, browser_check, demo_config


def test_every_output_has_a_caption_naming_what_it_reproduces():
    cfg = demo_config()
    for paper, pc in cfg["papers"].items():
        published = yaml.safe_load((REPO / pc["published"]).read_text())
        caps = captions(paper_spec(pc), published)
        fixed = {"comparison", "headline", "departures", "calibration"}
        assert {o["name"] for o in pc["outputs"]} | fixed == set(caps), paper
        assert all(c.endswith(".") and len(c) > 30 for c in caps.values()), paper
    tm = cfg["papers"]["transfer_multidataset"]
    caps = captions(paper_spec(tm), yaml.safe_load((REPO / tm["published"]).read_text()))
    # a range key covers the figures inside it; the paper's own words are quoted
    assert "fig5_1_to_5_3" in caps["fig5_2_batch_size_C19"] and "fig6_1_to_6_3" in caps["fig6_3_predictions_ER"]
    assert "after stage 2 (left) and after stages 3-4 (right)" in caps["fig5_5_confusion_before_after"]
    assert "Not a numbered" in caps["model_parameters"]


def _paper_dir(root, name):
    d = root / "papers" / name
    (d / "figures").mkdir(parents=True)
    write_table(pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]}), d / "tables" / "comparison", caption="cmp")
    Image.fromarray((np.random.default_rng(0).random((20, 30)) * 255).astype(np.uint8)).save(d / "figures" / "f1.png")
    (d / "figures" / "f1.pdf").write_bytes(b"%PDF-1.4\n")
    (d / "captions.json").write_text('{"f1": "A figure (e1). Reproduces the paper\'s fig1.", "comparison": "C."}')
    return d


def test_site_pages_link_every_table_and_figure(tmp_path):
    dirs = {n: _paper_dir(tmp_path, n) for n in ("p1", "p2")}
    comparison = (dirs["p1"] / "tables" / "comparison.md").read_text()
    (tmp_path / "report.md").write_text(
        "# medrepro reproduction report\n\n_demo_\n\n## Audit of the published tables\n\n| paper | checks |\n"
        f"|---|---|\n| p1 | 3 |\n\n## p1: First paper\n\n{comparison}\n\n"
        "Outputs: `tables/comparison.md`, `figures/f1.png`\n\n"
        "## p2: Second\n\ntext\n\n## Provenance\n\ncommit x\n")
    pages = write_site(tmp_path / "report.md", dirs, tmp_path / "html")
    assert [p.name for p in pages] == ["index.html", "p1.html", "p2.html"]
    index = (tmp_path / "html" / "index.html").read_text()
    assert "<table>" in index and "Audit of the published tables" in index and "Provenance" in index
    assert "First paper" not in index and 'href="p1.html"' in index
    p1 = (tmp_path / "html" / "p1.html").read_text()
    assert "First paper" in p1 and "Reproduces the paper's fig1." in html.unescape(p1)
    assert "Reproduces the paper's" not in p1  # captions are escaped (jinja2's autoescape)
    assert 'href="../papers/p1/tables/comparison.md"' in p1 and 'src="../papers/p1/figures/f1.png"' in p1
    # the comparison the report's section prints is not printed again under Tables; p2's is
    assert p1.count("<table>") == 1 and "(shown above)" in p1
    assert (tmp_path / "html" / "p2.html").read_text().count("<table>") == 1
    # a long table is folded under a summary with its row count; a short one is not
    long = pd.DataFrame({"metric": [f"m{i}" for i in range(30)], "value": range(30)})
    write_table(long, dirs["p2"] / "tables" / "long", caption="long")
    write_site(tmp_path / "report.md", dirs, tmp_path / "html")
    p2 = (tmp_path / "html" / "p2.html").read_text()
    assert p2.count("<details><summary>30 rows (click to show)</summary>") == 1 and p2.count("<table>") == 2
    assert "<details>" not in (tmp_path / "html" / "p1.html").read_text()
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    for page in pages:
        images, links = browser_check(page)
        assert [src for src, ok in images if not ok] == []
        assert all(h.startswith("file://") for h in links)
        broken = [h for h in links if not Path(h[7:].split("#")[0]).exists()]
        assert broken == [], broken
    images, _ = browser_check(tmp_path / "html" / "p1.html")
    assert len(images) == 1 and images[0][1]
    # a missing figure is seen as broken by the browser
    (dirs["p1"] / "figures" / "f1.png").unlink()
    images, _ = browser_check(tmp_path / "html" / "p1.html")
    assert images and not images[0][1]
