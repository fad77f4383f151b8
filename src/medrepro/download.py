"""Fetch a real dataset into its raw folder (run on a machine with internet: a login node).

Two kinds, set under ``datasets.<name>.download`` in config:

``urls``
    a list of files, each ``{url, name?, md5?, unpack?}``; every file is streamed
    to disk with a progress bar, its MD5 checked when given, and zips unpacked
    when ``unpack`` is true (figshare brain tumour: the four zips stay zipped,
    the reader reads them as they are).
``kaggle_dataset`` / ``kaggle_competition``
    the official ``kaggle`` command (``pip install kaggle`` and an API token in
    ``~/.kaggle/kaggle.json``; competitions need their rules accepted first).

The download is assembled in a temporary sibling folder and moved into place
only when complete, so an interrupted download never looks finished.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from .io import atomic_dir


class DownloadError(RuntimeError):
    pass


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch_url(url: str, dest: str | Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Stream ``url`` to ``dest`` (atomically) and check its MD5 when given."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr, mininterval=2) as bar:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"cannot download {url}: {exc}") from exc
    if md5:
        got = md5sum(tmp)
        if got != md5.lower():
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"{url}: MD5 is {got}, expected {md5} (corrupt or changed download)")
    os.replace(tmp, dest)
    return dest


def _kaggle(kind: str, slug: str, into: Path) -> None:
    exe = shutil.which("kaggle")
    if exe is None:
        raise DownloadError("the 'kaggle' command is not installed: pip install kaggle, and put your API token "
                            "in ~/.kaggle/kaggle.json (https://www.kaggle.com/docs/api)")
    sub = ["datasets", "download", "-d", slug] if kind == "kaggle_dataset" else ["competitions", "download", "-c", slug]
    proc = subprocess.run([exe, *sub, "-p", str(into)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DownloadError(f"kaggle {' '.join(sub)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    for z in sorted(into.glob("*.zip")):
        with zipfile.ZipFile(z) as zf:
            zf.extractall(into)
        z.unlink()


def fetch_dataset(spec: dict, out_dir: str | Path) -> Path:
    """Download what ``spec`` describes into ``out_dir`` (replaced only on success)."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        kind = spec.get("kind")
        if kind == "urls":
            files = spec.get("files") or []
            if not files:
                raise DownloadError("download.files is empty: list the URLs to fetch")
            for f in files:
                name = f.get("name") or Path(unquote(urlparse(f["url"]).path)).name
                if not name:
                    raise DownloadError(f"cannot tell a file name from {f['url']}: set 'name'")
                path = fetch_url(f["url"], tmp / name, f.get("md5"))
                if f.get("unpack"):
                    with zipfile.ZipFile(path) as zf:
                        zf.extractall(tmp)
                    path.unlink()
        elif kind in ("kaggle_dataset", "kaggle_competition"):
            if not spec.get("slug"):
                raise DownloadError(f"download.slug is required for kind {kind}")
            _kaggle(kind, spec["slug"], tmp)
        else:
            raise DownloadError(f"download.kind {kind!r}; expected urls, kaggle_dataset or kaggle_competition")
    return out_dir


def torchvision_weights_url(backbone: str) -> str:
    """The URL of torchvision's ``IMAGENET1K_V1`` weights of ``backbone`` (the original
    ImageNet training, the closest to the Keras applications' weights); for a detection
    model (``maskrcnn_resnet50_fpn``) its ``COCO_V1`` weights."""
    import torchvision

    w = torchvision.models.get_model_weights(backbone)
    return (w.IMAGENET1K_V1 if hasattr(w, "IMAGENET1K_V1") else w.COCO_V1).url


def fetch_torchvision_weights(backbone: str, dest: str | Path, url: str | None = None) -> Path:
    """Download torchvision's ImageNet weights of ``backbone`` to ``dest``.

    torchvision names its files ``<name>-<first 8 hex digits of the SHA-256>.pth``; that
    prefix is checked, as ``torch.hub`` does.
    """
    url = url or torchvision_weights_url(backbone)
    path = fetch_url(url, Path(dest).with_name(f".{Path(dest).name}.download"))
    prefix = Path(unquote(urlparse(url).path)).stem.rsplit("-", 1)[-1]
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    if not h.startswith(prefix):
        path.unlink()
        raise DownloadError(f"{url}: SHA-256 {h[:8]}... does not start with {prefix} (corrupt download)")
    os.replace(path, dest)
    return Path(dest)
