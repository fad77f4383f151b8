"""Kermany pediatric chest X-ray (Kaggle ``paultimothymooney/chest-xray-pneumonia``).

Layout of the Kaggle mirror of Kermany et al. (2018), doi:10.17632/rscbjbr9sj.2 ::

    chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg
    chest_xray/chest_xray/...        a full duplicate copy: ignored

Also read: Mendeley v2 (no ``val/``) and v3 (``CellData/chest_xray`` with
``NORMAL-<id>-<seq>.jpeg``, ``BACTERIA-...``, ``VIRUS-...`` names).

Patient ids come from the file names: ``person<N>`` for pneumonia files,
``IM-<NNNN>`` and ``NORMAL2-IM-<NNNN>`` for normal ones (kept as separate
series, as the spec advises), ``<id>`` for v3 names.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..parallel import pmap, seeded
from ..synth.phantoms import chest_radiograph
from .base import DatasetLayoutError, IngestResult, is_system_file, plant_duplicates

NAME = "kermany"
SPLITS = ("train", "val", "test")
CLASSES = ("NORMAL", "PNEUMONIA")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}

_PATTERNS = [
    (re.compile(r"^(person\d+)_(bacteria|virus)_\d+$"), lambda m: (m.group(1), m.group(2))),
    (re.compile(r"^(NORMAL2-IM-\d+)-\d+(?:-\d+)?$"), lambda m: (m.group(1), "")),
    (re.compile(r"^(IM-\d+)-\d+(?:-\d+)?$"), lambda m: (m.group(1), "")),
    (re.compile(r"^(NORMAL|BACTERIA|VIRUS)-(\d+)-\d+$"),
     lambda m: (m.group(2), {"BACTERIA": "bacteria", "VIRUS": "virus"}.get(m.group(1), ""))),
]


def parse_name(stem: str) -> tuple[str | None, str]:
    """Return (patient id, pneumonia subtype) parsed from a Kermany file stem.

    The id is None when the name follows no known pattern.
    """
    for pat, fn in _PATTERNS:
        m = pat.match(stem)
        if m:
            return fn(m)
    return None, ""


def find_root(root: str | Path) -> Path:
    """The folder holding ``train/`` and ``test/`` inside a Kermany download."""
    root = Path(root)
    for cand in (root / "chest_xray", root / "CellData" / "chest_xray", root):
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    raise DatasetLayoutError(
        f"{root}: expected chest_xray/{{train,val,test}}/{{NORMAL,PNEUMONIA}} (Kaggle) or "
        "CellData/chest_xray/{train,test} (Mendeley v3)"
    )


# ----------------------------------------------------------------------------- synthesize
def _image_size(rng, cls: str, scale: float) -> tuple[int, int]:
    # real means: NORMAL 1686 x 1379, PNEUMONIA 1195 x 820 (w x h); a class shortcut the spec asks to keep
    if cls == "NORMAL":
        w = np.clip(rng.normal(1686, 330), 912, 2916)
        h = np.clip(w * rng.normal(0.82, 0.07), 496, 2713)
    else:
        w = np.clip(rng.normal(1195, 300), 384, 2772)
        h = np.clip(w * rng.normal(0.69, 0.08), 127, 2304)
    return max(int(w * scale), 32), max(int(h * scale), 32)


def _synth_one(args):
    seed, key, path, cls, subtype, scale, rgb, difficulty = args
    rng = seeded(seed, "kermany", key)
    w, h = _image_size(rng, cls, scale)
    finding = "none" if cls == "NORMAL" else ("lobar" if subtype == "bacteria" else "interstitial")
    img = Image.fromarray(chest_radiograph(rng, h, w, finding, difficulty).image)
    if rgb:
        img = img.convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    # NORMAL files are ~6x larger in the real set: higher JPEG quality reproduces part of that
    img.save(path, format="JPEG", quality=95 if cls == "NORMAL" else 75)
    return path.name


def synthesize(root: str | Path, seed: int, counts: dict, size_scale: float = 0.25, difficulty: float = 0.5,
               rgb_fraction: float = 0.073, shared_patient_fraction: float = 0.05,
               nested_duplicate: bool = True, duplicates: dict | None = None, threads: int = 1) -> dict:
    """Write a synthetic Kaggle Kermany tree under ``root``.

    ``counts`` maps split -> class -> number of images, e.g.
    ``{"train": {"NORMAL": 134, "PNEUMONIA": 388}, ...}``.  Patients have 1-3
    images; ``shared_patient_fraction`` of test patients also appear in train
    (the real set has such cross-split patients).  RGB files appear only in
    train/PNEUMONIA, as in the real set.  ``duplicates`` ({exact, near}) overwrites that many
    images with copies of others of the same class (:func:`~.base.plant_duplicates`), for the
    leakage audit.  Returns the plan as a list of dicts and the planted copies.
    """
    root = Path(root)
    rng = seeded(seed, "kermany-plan")
    plan = []
    person = 1
    im = 1
    seq = 1
    train_patients: dict[str, list[str]] = {c: [] for c in CLASSES}
    n_images: dict[str, int] = {}  # images so far per normal series, so file names never repeat
    for split in SPLITS:
        for cls in CLASSES:
            n = int(counts.get(split, {}).get(cls, 0))
            made = 0
            while made < n:
                k = int(min(rng.choice([1, 1, 2, 3]), n - made))
                reuse = split == "test" and train_patients[cls] and rng.random() < shared_patient_fraction
                if cls == "PNEUMONIA":
                    pid = train_patients[cls][rng.integers(len(train_patients[cls]))] if reuse else f"person{person}"
                    if not reuse:
                        person += 1
                    for _ in range(k):
                        sub = "bacteria" if rng.random() < 0.65 else "virus"
                        plan.append((split, cls, f"{pid}_{sub}_{seq}", pid, sub))
                        seq += 1
                else:
                    series = "NORMAL2-IM" if rng.random() < 0.3 else "IM"
                    pid = train_patients[cls][rng.integers(len(train_patients[cls]))] if reuse else f"{series}-{im:04d}"
                    if not reuse:
                        im += 1
                    for _ in range(k):
                        n_images[pid] = n_images.get(pid, 0) + 1
                        plan.append((split, cls, f"{pid}-{n_images[pid]:04d}", pid, ""))
                if split == "train" and not reuse:
                    train_patients[cls].append(pid)
                made += k
    keys = [(split, cls, stem) for split, cls, stem, *_ in plan]
    if len(set(keys)) != len(keys):  # would overwrite a file silently
        raise AssertionError("kermany synthesis planned the same file twice")
    jobs = []
    for split, cls, stem, pid, sub in plan:
        rgb = split == "train" and cls == "PNEUMONIA" and rng.random() < rgb_fraction
        path = root / "chest_xray" / split / cls / f"{stem}.jpeg"
        jobs.append((seed, stem, path, cls, sub, size_scale, rgb, difficulty))
    pmap(_synth_one, jobs, threads, desc="kermany: synthesize JPEGs")
    by_class: dict = {}
    for job in jobs:
        by_class.setdefault(job[3], []).append(job[2])
    planted = plant_duplicates(root, by_class, seeded(seed, "kermany-duplicates"), **(duplicates or {}))
    if nested_duplicate:
        for split, cls, stem, *_ in plan:
            src = root / "chest_xray" / split / cls / f"{stem}.jpeg"
            dst = root / "chest_xray" / "chest_xray" / split / cls / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    (root / "chest_xray" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return {"plan": [dict(zip(("split", "label", "stem", "patient_id", "subtype"), p)) for p in plan],
            "planted_duplicates": planted}


# ----------------------------------------------------------------------------- ingest
def _probe(path: Path):
    try:
        with Image.open(path) as im:
            return im.size, im.mode, im.format, None
    except Exception as exc:
        return None, None, None, str(exc)


def ingest(root: str | Path, threads: int = 1) -> IngestResult:
    """Read a Kermany tree into a manifest; ``image_id`` is ``<split>/<class>/<stem>``."""
    base = find_root(root)
    res = IngestResult()
    files: list[tuple[Path, str, str]] = []
    for split_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        if split_dir.name == "chest_xray" or is_system_file(split_dir):
            continue  # the nested duplicate copy; macOS metadata
        if split_dir.name not in SPLITS:
            res.reject(split_dir, f"unexpected folder; expected one of {list(SPLITS)}", "", "split")
            continue
        for cls_dir in sorted(p for p in split_dir.iterdir()):
            if is_system_file(cls_dir):
                continue
            if not cls_dir.is_dir() or cls_dir.name not in CLASSES:
                res.reject(cls_dir, f"unknown class folder; expected one of {list(CLASSES)}", "", "label")
                continue
            for f in sorted(cls_dir.iterdir()):
                if is_system_file(f):
                    continue
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    res.reject(f, f"not an image file; expected one of {sorted(IMAGE_SUFFIXES)}", "", "path")
                    continue
                files.append((f, split_dir.name, cls_dir.name))
    probes = pmap(_probe, [f for f, _, _ in files], threads, desc="kermany: read headers")
    for (f, split, cls), (size, mode, fmt, err) in zip(files, probes):
        if err is not None:
            res.reject(f, f"cannot open image: {err}", "", "path")
            continue
        pid, subtype = parse_name(f.stem)
        meta = {"width": size[0], "height": size[1], "mode": mode, "format": fmt}
        if pid is None:
            pid = f.stem
            meta["note"] = "file name matches no known pattern: patient id = file stem"
        if subtype:
            meta["subtype"] = subtype
        res.add(f"{split}/{cls}/{f.stem}", f, label=cls, patient_id=pid, source_split=split, **meta)
    return res
