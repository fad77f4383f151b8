"""COVID-19 Radiography Database (Kaggle ``tawsifurrahman/covid19-radiography-database``).

Layout, as downloaded from https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database ::

    COVID-19_Radiography_Dataset/
        <Class>/images/<Class>-<n>.png      299 x 299
        <Class>/masks/<Class>-<n>.png       lung masks, same file name (size and mode vary)
        <Class>.metadata.xlsx               FILE NAME (no extension), FORMAT, SIZE, URL
        README.md.txt

Classes: COVID, Lung_Opacity, Normal, Viral Pneumonia (with a space).  The
xlsx ``FILE NAME`` values are matched case-insensitively (``NORMAL-1`` names
``Normal-1.png``).  The set has no patient ids: each image is its own group.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..parallel import pmap, seeded
from ..synth.phantoms import chest_radiograph
from .base import DatasetLayoutError, IngestResult, is_system_file, plant_duplicates

NAME = "covid"
TOP = "COVID-19_Radiography_Dataset"
CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
XLSX_COLUMNS = ["FILE NAME", "FORMAT", "SIZE", "URL"]
FINDINGS = {"COVID": "peripheral", "Lung_Opacity": "lobar", "Normal": "none", "Viral Pneumonia": "interstitial"}
URLS = {
    "COVID": "https://github.com/ieee8023/covid-chestxray-dataset",
    "Lung_Opacity": "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data",
    "Normal": "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data",
    "Viral Pneumonia": "https://www.kaggle.com/paultimothymooney/chest-xray-pneumonia",
}


def _synth_one(args):
    seed, cls, n, root, size, mask_size, difficulty = args
    rng = seeded(seed, "covid", cls, n)
    img = chest_radiograph(rng, size, size, FINDINGS[cls], difficulty)
    name = f"{cls}-{n}.png"
    Image.fromarray(img.image).save(root / cls / "images" / name)
    mask = Image.fromarray((img.lung_mask * 255).astype(np.uint8)).resize((mask_size, mask_size), Image.NEAREST)
    mask.convert("RGB").save(root / cls / "masks" / name)
    return name


def synthesize(root: str | Path, seed: int, counts: dict, image_size: int = 299, mask_size: int = 256,
               difficulty: float = 0.5, duplicates: dict | None = None, threads: int = 1) -> dict:
    """Write a synthetic COVID-19 Radiography Database; ``counts`` maps class -> n."""
    top = Path(root) / TOP
    jobs = []
    for cls in CLASSES:
        (top / cls / "images").mkdir(parents=True, exist_ok=True)
        (top / cls / "masks").mkdir(parents=True, exist_ok=True)
        jobs += [(seed, cls, n, top, image_size, mask_size, difficulty) for n in range(1, int(counts.get(cls, 0)) + 1)]
    pmap(_synth_one, jobs, threads, desc="covid: synthesize PNGs")
    by_class = {c: [top / c / "images" / f"{c}-{n}.png" for n in range(1, int(counts.get(c, 0)) + 1)] for c in CLASSES}
    planted = plant_duplicates(root, by_class, seeded(seed, "covid-duplicates"), **(duplicates or {}))
    for cls in CLASSES:
        n = int(counts.get(cls, 0))
        stem = "NORMAL" if cls == "Normal" else cls  # the real Normal sheet is upper-case
        df = pd.DataFrame({
            "FILE NAME": [f"{stem}-{i}" for i in range(1, n + 1)],
            "FORMAT": ["PNG"] * n,
            "SIZE": [f"{image_size}*{image_size}"] * n,
            "URL": [URLS[cls]] * n,
        })
        df.to_excel(top / f"{cls}.metadata.xlsx", index=False)
    (top / "README.md.txt").write_text("Synthetic stand-in for the COVID-19 Radiography Database.\n")
    return {"counts": {c: int(counts.get(c, 0)) for c in CLASSES}, "planted_duplicates": planted}


def ingest(root: str | Path, threads: int = 1) -> IngestResult:
    root = Path(root)
    top = root / TOP if (root / TOP).is_dir() else root
    if not any((top / c).is_dir() for c in CLASSES):
        raise DatasetLayoutError(f"{root}: expected {TOP}/<class>/images with classes {list(CLASSES)}")
    res = IngestResult()
    for cls in CLASSES:
        img_dir = top / cls / "images"
        if not img_dir.is_dir():
            res.reject(top / cls, "class folder (with images/) is missing", "", "label")
            continue
        xlsx = top / f"{cls}.metadata.xlsx"
        rows: dict[str, tuple[int, dict]] = {}
        if xlsx.is_file():
            try:
                df = pd.read_excel(xlsx, dtype=str, keep_default_na=False)
            except Exception as exc:
                res.reject(xlsx, f"cannot read the metadata workbook ({exc})")
                df = pd.DataFrame(columns=XLSX_COLUMNS)
            missing = [c for c in XLSX_COLUMNS if c not in df.columns]
            if missing:
                res.reject(xlsx, f"missing columns {missing}; expected {XLSX_COLUMNS}", "", missing[0])
            else:
                for i, r in enumerate(df.to_dict("records"), start=1):
                    rows[r["FILE NAME"].strip().lower()] = (i, r)
        else:
            res.reject(xlsx, "metadata workbook is missing; images are read without it")
        seen = set()
        for f in sorted(img_dir.iterdir()):
            if is_system_file(f):
                continue
            if f.suffix.lower() != ".png":
                res.reject(f, "not a PNG image", "", "path")
                continue
            key = f.stem.lower()
            seen.add(key)
            row = rows.get(key)
            meta = {}
            if row is not None:
                meta = {"xlsx_row": row[0], "format": row[1].get("FORMAT", ""), "size": row[1].get("SIZE", ""),
                        "url": row[1].get("URL", "")}
            elif rows:
                meta["note"] = f"no row in {xlsx.name}"
            mask = top / cls / "masks" / f.name
            if not mask.is_file():
                meta["mask_note"] = "no mask file"
            res.add(f"{cls}/{f.stem}", f, label=cls, source_split="", mask_path=mask if mask.is_file() else "",
                    **meta)
        for key, (i, r) in rows.items():
            if key not in seen:
                res.reject(xlsx, f"FILE NAME {r['FILE NAME']!r} has no image {cls}/images/{r['FILE NAME']}.png",
                           i, "FILE NAME")
    return res
