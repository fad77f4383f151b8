"""Conversion of every dataset's images into one contract: normalised 8-bit PNG.

The contract: ``uint8`` PNG, grayscale (mode L) for ``channels: 1`` or RGB for
``channels: 3``, longest side at most ``max_side`` (aspect kept, area
resampling), masks as 0/255 PNGs of the same size.  Boxes in the converted
manifest are rescaled to the PNG's pixels; the original size is kept in
``orig_width``/``orig_height``.

Decoders by source: ``.dcm`` -> :func:`medrepro.dicom.read_dicom`; figshare
``.mat`` (loose or ``zip::member``) -> min-max of the int16 slice; anything
Pillow opens (JPEG, PNG) -> Pillow.  Items that fail are returned as
rejections; the rest of the run goes on.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .datasets.base import REJECTED_COLUMNS
from .datasets.brain_tumor import load_member, read_mat73
from .dicom import read_dicom
from .io import save_png
from .parallel import pmap

CONVERTED_EXTRA = ["png", "mask_png", "width", "height", "orig_width", "orig_height", "channels", "notes"]


def safe_name(image_id: str) -> str:
    """A file name for ``image_id`` ('/' becomes '__', other unsafe characters '_')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", image_id.replace("/", "__"))


def _to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1 and arr.ndim == 3:
        return np.asarray(Image.fromarray(arr).convert("L"))
    if channels == 3 and arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    return arr


def decode(path: str, channels: int) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Decode one source image (and its embedded mask, for .mat) to uint8."""
    notes: list[str] = []
    mask = None
    if path.lower().endswith(".dcm"):
        d = read_dicom(path)
        arr, notes = d.pixels, d.notes
    elif path.lower().endswith(".mat"):
        d = read_mat73(load_member(path))
        img = d["image"].astype(np.float64)
        lo, hi = float(img.min()), float(img.max())
        arr = np.zeros(img.shape, np.uint8) if hi <= lo else np.rint((img - lo) * 255.0 / (hi - lo)).astype(np.uint8)
        mask = (d["mask"] > 0).astype(np.uint8) * 255
        notes.append("int16 min-max scaled to 0..255")
    else:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "RGB"):
                notes.append(f"mode {im.mode} converted")
            arr = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    return _to_channels(arr, channels), mask, notes


def _resize(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    if arr.shape[1] == size[0] and arr.shape[0] == size[1]:
        return arr
    return np.asarray(Image.fromarray(arr).resize(size, Image.NEAREST if nearest else Image.BOX))


def _convert_one(job):
    row, out_dir, max_side, channels, compress_level = job
    try:
        arr, mask, notes = decode(row["path"], channels)
        if mask is None and row.get("mask_path"):
            with Image.open(row["mask_path"]) as m:
                mask = (np.asarray(m.convert("L")) > 127).astype(np.uint8) * 255
        oh, ow = arr.shape[:2]
        scale = min(1.0, max_side / max(oh, ow)) if max_side else 1.0
        nw, nh = max(1, round(ow * scale)), max(1, round(oh * scale))
        arr = _resize(arr, (nw, nh))
        name = safe_name(row["image_id"])
        png = Path(out_dir) / f"{name}.png"
        save_png(png, np.ascontiguousarray(arr), compress_level)
        mask_png = ""
        if mask is not None:
            if mask.shape[:2] != (oh, ow):
                notes.append(f"mask {mask.shape[1]}x{mask.shape[0]} resized to the image")
            mask = _resize(mask, (nw, nh), nearest=True)
            mask_png = str(Path(out_dir) / f"{name}.mask.png")
            save_png(mask_png, mask, compress_level)
        sx, sy = nw / ow, nh / oh
        boxes = [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in json.loads(row["boxes"] or "[]")]
        return {**row, "boxes": json.dumps([[round(v, 3) for v in b] for b in boxes]), "png": str(png),
                "mask_png": mask_png, "width": nw, "height": nh, "orig_width": ow, "orig_height": oh,
                "channels": channels, "notes": "; ".join(notes)}, None
    except Exception as exc:  # one bad file must not stop the run
        return None, {"file": row["path"], "row": "", "field": "path",
                      "reason": f"cannot convert image {row['image_id']}: {type(exc).__name__}: {exc}"}


def convert_manifest(manifest: pd.DataFrame, out_dir: str | Path, channels: int = 1, max_side: int | None = 1024,
                     threads: int = 1, compress_level: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert every row of ``manifest`` to PNG under ``out_dir`` using ``threads`` processes.

    Returns the converted manifest (the input columns plus :data:`CONVERTED_EXTRA`)
    and the rejections.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    names = manifest["image_id"].map(safe_name)
    if names.duplicated().any():
        raise ValueError(f"image ids collide after making them file names: {names[names.duplicated()].tolist()[:5]}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(row, out_dir, max_side, channels, compress_level) for row in manifest.to_dict("records")]
    results = pmap(_convert_one, jobs, threads, desc="convert to PNG")
    ok = [r for r, _ in results if r is not None]
    bad = [e for _, e in results if e is not None]
    cols = list(manifest.columns) + [c for c in CONVERTED_EXTRA if c not in manifest.columns]
    return pd.DataFrame(ok, columns=cols), pd.DataFrame(bad, columns=REJECTED_COLUMNS)
