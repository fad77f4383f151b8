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



def demo_config(*overlays: str) -> dict:
    """The demo config (``config/config.yaml`` and the paper folders, with each of ``overlays`` under
    ``config/`` given as a ``--configfile``), validated: every default the schema gives is filled
    in, as the workflow's own config is."""
    from medrepro.config import load_config

    return load_config(REPO / "config", [REPO / "config" / o for o in overlays])


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
