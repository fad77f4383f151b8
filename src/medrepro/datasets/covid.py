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
# the collections the database gathered (its README and metadata sheets), by short name
COLLECTIONS = {
    "rsna": "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data",
    "kermany": "https://www.kaggle.com/paultimothymooney/chest-xray-pneumonia",
    "padchest": "https://bimcv.cipf.es/bimcv-projects/bimcv-covid19/",
    "ieee8023": "https://github.com/ieee8023/covid-chestxray-dataset",
}
# each class's collections and their shares, roughly as in the real v5 release: Normal is mostly
# RSNA's adults with Kermany's children, Viral Pneumonia all Kermany's children, Lung_Opacity RSNA's,
# COVID mostly BIMCV-PadChest with the public GitHub collection
SOURCES = {
    "COVID": {"padchest": 0.7, "ieee8023": 0.3},
    "Lung_Opacity": {"rsna": 1.0},
    "Normal": {"rsna": 0.87, "kermany": 0.13},
    "Viral Pneumonia": {"kermany": 1.0},
}


def source_mark(image: np.ndarray, lung_mask: np.ndarray, rng) -> np.ndarray:
    """Burn a collection's signature into ``image`` outside the lungs: a bright side marker in the
    upper corner and a dark collimation band along the lower edge, where a hospital's equipment
    and habits leave theirs (``lung_mask``: the pixels left untouched)."""
    out = image.astype(np.int16).copy()
    h, w = out.shape
    y0, x0 = int(h * rng.uniform(0.03, 0.06)), int(w * rng.uniform(0.04, 0.08))
    marker = np.zeros_like(lung_mask)
    marker[y0:y0 + h // 12, x0:x0 + w // 14] = True
    band = np.zeros_like(lung_mask)
    band[int(h * 0.93):, :] = True
    out[marker & ~lung_mask] = 250
    out[band & ~lung_mask] = out[band & ~lung_mask] // 3
    return np.clip(out, 0, 255).astype(np.uint8)


def _synth_one(args):
    seed, cls, n, root, size, mask_size, difficulty, mark = args
    rng = seeded(seed, "covid", cls, n)
    img = chest_radiograph(rng, size, size, FINDINGS[cls], difficulty)
    pixels = source_mark(img.image, img.lung_mask, rng) if mark else img.image
    name = f"{cls}-{n}.png"
    Image.fromarray(pixels).save(root / cls / "images" / name)
    mask = Image.fromarray((img.lung_mask * 255).astype(np.uint8)).resize((mask_size, mask_size), Image.NEAREST)
    mask.convert("RGB").save(root / cls / "masks" / name)
    return name


def synthesize(root: str | Path, seed: int, counts: dict, image_size: int = 299, mask_size: int = 256,
               difficulty: float = 0.5, duplicates: dict | None = None, sources: dict | None = None,
               marked: tuple = (), copies: dict | None = None, copy_roots: dict | None = None,
               threads: int = 1) -> dict:
    """Write a synthetic COVID-19 Radiography Database; ``counts`` maps class -> n.

    ``sources`` gives classes' collections and their shares (the others' from :data:`SOURCES`); each
    image's collection is its URL in the class's metadata sheet, as in the real database.  Images
    of the collections in ``marked`` carry a signature outside the lungs (:func:`source_mark`):
    what a source probe should find; the others carry none (its control).

    ``copies`` (``{kermany: n}``) replaces n images of the Kermany collection with pictures of the
    Kermany stand-in under ``copy_roots['kermany']`` (its train folder: NORMAL into Normal, viral
    PNEUMONIA into Viral Pneumonia), grey scale and resized to ``image_size`` square as the real
    database re-encoded them: copies across datasets for the leakage audit to find, listed under
    ``planted_across`` (they carry no signature: the original picture, re-encoded).
    """
    sources = {**SOURCES, **(sources or {})}
    unknown = sorted({c for per in sources.values() for c in per} - set(COLLECTIONS)) + \
        sorted(set(marked) - set(COLLECTIONS))
    if unknown:
        raise ValueError(f"unknown collection(s) {unknown}; expected some of {sorted(COLLECTIONS)}")
    top = Path(root) / TOP
    plan_rng = seeded(seed, "covid-sources")
    jobs, urls = [], {}
    for cls in CLASSES:
        (top / cls / "images").mkdir(parents=True, exist_ok=True)
        (top / cls / "masks").mkdir(parents=True, exist_ok=True)
        n = int(counts.get(cls, 0))
        names, shares = zip(*sources[cls].items())
        drawn = plan_rng.choice(len(names), size=n, p=np.asarray(shares) / sum(shares))
        urls[cls] = [COLLECTIONS[names[k]] for k in drawn]
        jobs += [(seed, cls, i, top, image_size, mask_size, difficulty, names[drawn[i - 1]] in marked)
                 for i in range(1, n + 1)]
    pmap(_synth_one, jobs, threads, desc="covid: synthesize PNGs")
    by_class = {c: [top / c / "images" / f"{c}-{n}.png" for n in range(1, int(counts.get(c, 0)) + 1)] for c in CLASSES}
    planted = plant_duplicates(root, by_class, seeded(seed, "covid-duplicates"), **(duplicates or {}))
    taken = {p for it in planted for p in (it["src"], it["dst"])}   # a copy is not overwritten, nor copied
    across = _copy_across(top, urls, copies or {}, copy_roots or {}, image_size, seeded(seed, "covid-copies"), taken)
    for cls in CLASSES:
        n = int(counts.get(cls, 0))
        stem = "NORMAL" if cls == "Normal" else cls  # the real Normal sheet is upper-case
        df = pd.DataFrame({
            "FILE NAME": [f"{stem}-{i}" for i in range(1, n + 1)],
            "FORMAT": ["PNG"] * n,
            "SIZE": [f"{image_size}*{image_size}"] * n,
            "URL": urls[cls],
        })
        df.to_excel(top / f"{cls}.metadata.xlsx", index=False)
    (top / "README.md.txt").write_text("Synthetic stand-in for the COVID-19 Radiography Database.\n")
    return {"counts": {c: int(counts.get(c, 0)) for c in CLASSES}, "planted_duplicates": planted,
            "planted_across": across,
            "sources": {c: dict(pd.Series(u).value_counts()) for c, u in urls.items()}, "marked": list(marked)}


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


# the Kermany stand-in's folders whose pictures the real database took, by class
KERMANY_FOLDERS = {"Normal": ("NORMAL", ""), "Viral Pneumonia": ("PNEUMONIA", "_virus_")}


def _copy_across(top: Path, urls: dict, copies: dict, roots: dict, size: int, rng, taken=()) -> list[dict]:
    """Overwrite Kermany-collection images with the Kermany stand-in's pictures (see
    :func:`synthesize`); returns ``{kind, dataset, src, dst}`` per copy, ``src`` relative to the
    other dataset's root and ``dst`` to this one's."""
    unknown = sorted(set(copies) - {"kermany"})
    if unknown:
        raise ValueError(f"copies: {unknown} cannot be copied; only kermany's pictures are (the database's "
                         "Kermany images)")
    n = int(copies.get("kermany", 0))
    if not n:
        return []
    if "kermany" not in roots:
        raise ValueError("copies: {kermany: ...} needs the Kermany stand-in's folder (copy_roots['kermany'])")
    root = Path(roots["kermany"])
    slots = [(cls, i) for cls in KERMANY_FOLDERS for i, u in enumerate(urls[cls], start=1)
             if u == COLLECTIONS["kermany"] and f"{TOP}/{cls}/images/{cls}-{i}.png" not in set(taken)]
    out = []
    for k in rng.permutation(len(slots))[:n]:
        cls, i = slots[int(k)]
        folder, marker = KERMANY_FOLDERS[cls]
        pool = sorted(p for p in (root / "chest_xray" / "train" / folder).glob("*.jpeg") if marker in p.name)
        used = {o["src"] for o in out}
        pool = [p for p in pool if p.relative_to(root).as_posix() not in used]
        if not pool:
            continue
        src = pool[int(rng.integers(len(pool)))]
        dst = top / cls / "images" / f"{cls}-{i}.png"
        with Image.open(src) as im:
            im.convert("L").resize((size, size), Image.BILINEAR).save(dst)
        out.append({"kind": "copy from kermany", "dataset": "kermany", "src": src.relative_to(root).as_posix(),
                    "dst": dst.relative_to(top.parent).as_posix()})
    return out
