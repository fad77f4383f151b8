"""Shared fixtures: small synthetic datasets written once per test session."""
from __future__ import annotations

import html
import http.server
import json
import re
import subprocess
import threading
from functools import partial
from pathlib import Path
from urllib.parse import unquote

import pytest

from medrepro import datasets

REPO = Path(__file__).resolve().parents[1]



def paper_folders(holding: str = "runs.yaml") -> list[str]:
    """The papers, one folder each under config/papers/ (those whose folder holds ``holding``): what
    the tests run and check, so that a paper added as a folder is tested with the others."""
    return sorted(p.parent.name for p in (REPO / "config" / "papers").glob(f"*/{holding}"))


def demo_config(*overlays: str) -> dict:
    """The demo config (``config/config.yaml`` and the paper folders, with each of ``overlays`` under
    ``config/`` given as a ``--configfile``), validated: every default the schema gives is filled
    in, as the workflow's own config is."""
    from medrepro.config import load_config

    return load_config(REPO / "config", [REPO / "config" / o for o in overlays])


def train_spec(**over):
    """A ``train`` block's :class:`~medrepro.specs.TrainSpec`: the schema's defaults with ``over``
    laid over them (the one dataclass of the training settings has no defaults of its own)."""
    from medrepro.config import schema_defaults
    from medrepro.specs import train_spec as spec

    return spec(schema_defaults(REPO / "config" / "schema.yaml", "train_spec", **over))


KERMANY_COUNTS = {"train": {"NORMAL": 12, "PNEUMONIA": 20}, "val": {"NORMAL": 2, "PNEUMONIA": 2},
                  "test": {"NORMAL": 6, "PNEUMONIA": 8}}


@pytest.fixture(scope="session")
def raw(tmp_path_factory):
    """All five synthetic datasets, small, and what each synthesizer says it wrote."""
    root = tmp_path_factory.mktemp("raw")
    plans = {
        "rsna": datasets.rsna.synthesize(root / "rsna", 3, n_train=16, n_test=2, positive_fraction=0.5,
                                         image_size=256, threads=2),
        "kermany": datasets.kermany.synthesize(root / "kermany", 3, KERMANY_COUNTS, size_scale=0.08,
                                               shared_patient_fraction=0.3, threads=2),
        "covid": datasets.covid.synthesize(root / "covid", 3, {"COVID": 3, "Lung_Opacity": 2, "Normal": 4,
                                                               "Viral Pneumonia": 2}, image_size=64, mask_size=48),
        "brain_tumor": datasets.brain_tumor.synthesize(root / "brain_tumor", 3, {"meningioma": 2, "glioma": 3,
                                                                                 "pituitary": 2},
                                                       image_size=64, small_fraction=0.2),
        "rfmid": datasets.rfmid.synthesize(root / "rfmid", 3, {"train": 8, "val": 3, "test": 3}, size_scale=0.04),
    }
    return root, plans


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def browser_check(page: Path) -> tuple[list, list]:
    """Open ``page`` in headless Chromium; return (each image's src and whether it loaded, each
    link's resolved href), read from the DOM after the load event."""
    probe = page.with_name(f"_probe_{page.name}")
    script = ("<script>window.addEventListener('load', () => { document.body.setAttribute('data-images', "
              "JSON.stringify([...document.images].map(i => [i.src, i.complete && i.naturalWidth > 0]))); "
              "document.body.setAttribute('data-links', JSON.stringify([...document.links].map(a => a.href))); "
              "});</script></body>")
    probe.write_text(page.read_text().replace("</body>", script))
    try:
        out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                              "--dump-dom", probe.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    attrs = dict(re.findall(r'data-(images|links)="([^"]*)"', out.stdout))
    assert set(attrs) == {"images", "links"}, out.stdout[-2000:] + out.stderr[-2000:]
    links = [unquote(h) for h in json.loads(html.unescape(attrs["links"]))]
    return json.loads(html.unescape(attrs["images"])), links


def pdf_rows_missing(pdf, tables) -> dict:
    """Rows of the ``tables`` (each .tex's rows as its .md prints them: the same numbers) that the
    compiled ``pdf`` does not print inside its pages: a row is found by its first cell, with the second where that is
    text too (letters and digits only, as pypdf extracts them), as often as the rows that share it.
    {table: [(row key, rows, found)]}."""
    import re
    from collections import Counter

    import pypdf

    def norm(s):
        return re.sub(r"[^0-9A-Za-z]", "", str(s))

    def is_number(s):
        try:
            float(s)
            return True
        except ValueError:
            return False

    def on_page(page) -> str:   # what prints inside the page (a float taller than it runs off); a turned page: all
        w, h, kept = float(page.mediabox.width), float(page.mediabox.height), []

        def visit(piece, cm, tm, font, size):
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            if 0 <= x <= w and 0 <= y <= h or (page.get("/Rotate") or 0) % 180:
                kept.append(piece)
        page.extract_text(visitor_text=visit)
        return "".join(kept)

    text = norm("".join(on_page(page) for page in pypdf.PdfReader(pdf).pages))
    missing = {}
    for tex in tables:
        lines = [ln for ln in Path(tex).with_suffix(".md").read_text().splitlines() if ln.startswith("|")]
        rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]   # after header and rule
        second_is_text = all(len(r) > 1 and not is_number(r[1]) for r in rows if len(r) > 1 and r[1])
        keys = Counter(norm(r[0]) + (norm(r[1]) if second_is_text and len(r) > 1 else "") for r in rows)
        for key, n in keys.items():
            if text.count(key) < n:
                missing.setdefault(str(tex), []).append((key[:60], n, text.count(key)))
    return missing


def pdf_page_sizes(pdf) -> set:
    """The (width, height) in points of every page of ``pdf``, a turned page's as printed."""
    import pypdf

    sizes = set()
    for page in pypdf.PdfReader(pdf).pages:
        w, h = float(page.mediabox.width), float(page.mediabox.height)
        sizes.add((h, w) if (page.get("/Rotate") or 0) % 180 else (w, h))
    return sizes
