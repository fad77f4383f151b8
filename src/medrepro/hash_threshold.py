"""How many bits apart may two perceptual hashes be and still show the same picture?  The leakage
audit's ``leakage.max_distance``, measured on a set of images instead of assumed.

Each image is copied the ways a dataset builder copies pictures (:data:`PERTURBATIONS`: contrast
and gamma changes, a half-size and a 299 x 299 copy, a 5 % border crop, a JPEG re-encoding, with
Pillow), and the audit's hash (:func:`medrepro.leakage.perceptual_hash`) of every copy is compared
with its original's; the images' hashes are compared with one another too (distinct pictures, as
far as the set holds no copies of its own).  :func:`calibrate` says what the configured threshold
finds and misses, which copies no threshold finds (a crop moves the hash as far as another
picture), and the threshold that best tells the other copies from distinct pairs (Youden's J).

The images are the user's: ``medrepro hash-threshold results/converted/covid`` runs it on a run's
converted pictures (the demo's are synthetic stand-ins, drawn on one layout: their figures, in
bench/README.md, say little about real radiographs).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from .leakage import HASH_COLUMNS, duplicate_pairs, perceptual_hash

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _gamma(g: float) -> Callable[[Image.Image], Image.Image]:
    return lambda im: im.point([round(255 * (v / 255) ** g) for v in range(256)])


def _jpeg(im: Image.Image, quality: int = 75) -> Image.Image:
    import io

    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("L")


def _crop(im: Image.Image, fraction: float = 0.05) -> Image.Image:
    w, h = im.size
    dx, dy = round(w * fraction), round(h * fraction)
    return im.crop((dx, dy, w - dx, h - dy))


# what builders of public sets did to pictures they took from one another: the COVID-19 Radiography
# Database resized RSNA's and Kermany's to 299 x 299; contrast, gamma and re-encoding change with
# every export; a crop removes burnt-in borders and labels
PERTURBATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "contrast 0.7": lambda im: ImageEnhance.Contrast(im).enhance(0.7),
    "contrast 1.3": lambda im: ImageEnhance.Contrast(im).enhance(1.3),
    "gamma 0.7": _gamma(0.7),
    "gamma 1.5": _gamma(1.5),
    "half size": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS),
    "299 x 299": lambda im: im.resize((299, 299), Image.Resampling.LANCZOS),
    "crop 5 %": _crop,
    "JPEG q75": _jpeg,
}


def image_files(paths) -> list[Path]:
    """The image files of ``paths`` (files, or folders searched recursively), sorted; an error
    names a path that holds none."""
    out = []
    for p in map(Path, paths):
        found = sorted(f for f in p.rglob("*") if f.suffix.lower() in SUFFIXES) if p.is_dir() else [p]
        if not found or not all(f.is_file() for f in found):
            raise FileNotFoundError(f"{p}: no image files ({', '.join(SUFFIXES)}) there")
        out += found
    return out


def _gray(path) -> Image.Image:
    """The image at ``path`` in grayscale; a file Pillow cannot read is an error naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("L")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not an image Pillow can read ({exc})") from exc


def measure(files, perturbations=None) -> tuple[pd.DataFrame, list[str]]:
    """Each image read once: a row per image and perturbation with the bits between the image's
    hash and its copy's, and the images' own hashes (hex, in the order of ``files``)."""
    from tqdm import tqdm

    perturbations = perturbations or PERTURBATIONS
    rows, hashes = [], []
    for f in tqdm(files, desc="hash-threshold", file=sys.stderr, mininterval=5):
        gray = _gray(f)
        h = perceptual_hash(gray)
        hashes.append(str(h))
        for name, make in perturbations.items():
            rows.append({"image": str(f), "perturbation": name, "distance": int(h - perceptual_hash(make(gray)))})
    return pd.DataFrame(rows, columns=["image", "perturbation", "distance"]), hashes


def distinct_distances(hashes: list[str]) -> np.ndarray:
    """The bits between every two of the images' ``hashes`` (each pair once), through the audit's
    own pair search (:func:`medrepro.leakage.duplicate_pairs` with no limit)."""
    table = pd.DataFrame([(str(k), "", "", h) for k, h in enumerate(hashes)], columns=HASH_COLUMNS)
    return duplicate_pairs(table, max_distance=10 ** 6)["distance"].to_numpy(int)


def youden_threshold(copies: np.ndarray, distinct: np.ndarray, bits: int = 256) -> int:
    """The threshold (bits) that best tells copies from distinct pairs: the largest Youden's J
    (share of copies found less share of distinct pairs flagged), at the middle of the range of
    thresholds that reach it (as far from the copies' largest as from the distinct pairs' closest)."""
    t = np.arange(bits + 1)
    found = (np.sort(copies)[None, :] <= t[:, None]).mean(axis=1)
    flagged = (np.sort(distinct)[None, :] <= t[:, None]).mean(axis=1)
    j = found - flagged
    best = np.flatnonzero(j >= j.max() - 1e-12)
    run = best[: 1 + int(np.argmax(np.diff(best, append=best[-1] + 2) > 1))]   # the first contiguous range
    return int((run[0] + run[-1]) // 2)


def calibrate(paths, max_distance: int, perturbations=None) -> dict:
    """The copies' and the distinct pairs' distances of the images under ``paths`` and what they
    say about thresholds.  ``table``: a row per perturbation (copies, their distances' minimum,
    median and maximum, how many the configured ``max_distance`` finds, and whether a hash
    threshold can find them at all: their median below the distinct pairs' 1st percentile; a crop
    moves the hash about as far as another picture).  ``distinct``: pairs, smallest distance, 1st
    percentile, pairs within the configured threshold.  ``threshold``: :func:`youden_threshold`
    over the findable perturbations' copies, with the share of those copies it finds (``found``)
    and the distinct pairs it flags (``flagged``); ``distances``: every copy's distance."""
    files = image_files(paths)
    if len(files) < 2:
        raise ValueError(f"{len(files)} image(s): distinct pairs need at least two")
    copies, hashes = measure(files, perturbations)
    distinct = distinct_distances(hashes)
    p1 = float(np.percentile(distinct, 1))
    by = copies.groupby("perturbation", sort=False)["distance"]
    table = pd.DataFrame({"copies": by.size(), "min": by.min(), "median": by.median(), "max": by.max(),
                          f"found at {max_distance}": by.apply(lambda d: int((d <= max_distance).sum()))})
    table["findable"] = table["median"] < p1
    findable = copies[copies["perturbation"].map(table["findable"])]["distance"].to_numpy(int)
    t = youden_threshold(findable, distinct) if findable.size else max_distance
    return {"images": len(files), "max_distance": max_distance, "table": table.reset_index(),
            "distinct": {"pairs": int(distinct.size), "min": int(distinct.min()), "p1": p1,
                         f"within {max_distance}": int((distinct <= max_distance).sum())},
            "threshold": t, "found": float((findable <= t).mean()) if findable.size else float("nan"),
            "flagged": int((distinct <= t).sum()),
            "missed_at_configured": int((copies["distance"] > max_distance).sum()), "copies": int(len(copies)),
            "distances": copies}


def summary(result: dict) -> str:
    """The calibration as Markdown: the table, the distinct pairs, and the threshold it suggests."""
    d, m, tab = result["distinct"], result["max_distance"], result["table"]
    lost = ", ".join(tab.loc[~tab["findable"], "perturbation"])
    lines = [f"{result['images']} images, {result['copies']} copies ({len(tab)} perturbations each), "
             f"{d['pairs']} distinct pairs; hashes of 256 bits.", "",
             tab.to_markdown(index=False), "",
             f"Distinct pairs: smallest distance {d['min']} bits (1st percentile {d['p1']:.0f}); "
             f"{d[f'within {m}']} within the configured {m}.",
             f"The configured max_distance {m} misses {result['missed_at_configured']} of {result['copies']} copies.",
             f"Suggested max_distance {result['threshold']}: it finds {result['found']:.1%} of the copies a hash "
             f"can find and flags {result['flagged']} distinct pair(s) (look at them: a set may hold copies "
             f"of its own)."]
    if lost:
        lines.append(f"No threshold finds these copies (they move the hash as far as another picture): {lost}.")
    return "\n".join(lines)
