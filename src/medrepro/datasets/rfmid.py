"""RFMiD, the Retinal Fundus Multi-disease Image Dataset (Pachade et al. 2021).

Layout of the Kaggle mirror ``andrewmvd/retinal-disease-classification`` (dataset: doi:10.3390/data6020014)::

    Training_Set/Training_Set/{Training/<ID>.png, RFMiD_Training_Labels.csv}
    Evaluation_Set/Evaluation_Set/{Validation/<ID>.png, RFMiD_Validation_Labels.csv}
    Test_Set/Test_Set/{Test/<ID>.png, RFMiD_Testing_Labels.csv}

The IEEE DataPort layout (``1. Original Images/a. Training Set/...`` and
``2. Groundtruths/a. RFMiD_Training_Labels.csv``) is read as well.  IDs
restart at 1 in each split, so ``image_id`` is ``<split>/<ID>``.  The CSVs
have 47 integer columns: ID, Disease_Risk and 45 disease labels.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from ..parallel import pmap, seeded
from ..synth.phantoms import fundus
from .base import CsvDialectError, DatasetLayoutError, IngestResult, labels_csv_rows, plant_duplicates

NAME = "rfmid"
COLUMNS = ("ID,Disease_Risk,DR,ARMD,MH,DN,MYA,BRVO,TSLN,ERM,LS,MS,CSR,ODC,CRVO,TV,AH,ODP,ODE,ST,AION,PT,RT,RS,"
           "CRS,EDN,RPEC,MHL,RP,CWS,CB,ODPM,PRH,MNF,HR,CRAO,TD,CME,PTCR,CF,VH,MCA,VS,BRAO,PLQ,HPED,CL").split(",")
DISEASES = COLUMNS[2:]
SPLITS = {  # split -> (kaggle outer, image folder, csv name, IEEE image folder, IEEE csv)
    "train": ("Training_Set", "Training", "RFMiD_Training_Labels.csv", "a. Training Set",
              "a. RFMiD_Training_Labels.csv"),
    "val": ("Evaluation_Set", "Validation", "RFMiD_Validation_Labels.csv", "b. Validation Set",
            "b. RFMiD_Validation_Labels.csv"),
    "test": ("Test_Set", "Test", "RFMiD_Testing_Labels.csv", "c. Testing Set", "c. RFMiD_Testing_Labels.csv"),
}
# label frequencies in the real training CSV (1,920 rows), for the synthetic draw
FREQ = {"DR": 376, "MH": 317, "ODC": 282, "TSLN": 186, "DN": 138, "MYA": 101, "ARMD": 100, "BRVO": 73, "ODP": 65,
        "ODE": 58, "LS": 47, "RS": 43, "CSR": 37, "CRS": 32, "CRVO": 28, "RPEC": 22, "AION": 17, "MS": 15,
        "ERM": 14, "AH": 16, "TV": 6, "ST": 5, "PT": 11, "RT": 14, "EDN": 15, "MHL": 11, "RP": 6, "CWS": 3,
        "CB": 3, "PRH": 2, "MNF": 2, "CRAO": 2, "TD": 3, "CME": 2, "PTCR": 2, "CF": 2, "VH": 1, "MCA": 1, "VS": 2,
        "BRAO": 2, "PLQ": 1, "HPED": 1, "CL": 1}
SIZES = ((2144, 1424), (4288, 2848), (2048, 1536))


def _synth_one(args):
    seed, split, i, labels, w, h, difficulty, path = args
    rng = seeded(seed, "rfmid", split, i)
    Image.fromarray(fundus(rng, h, w, labels, difficulty)).save(path, compress_level=1)


def synthesize(root: str | Path, seed: int, counts: dict, size_scale: float = 0.1, healthy_fraction: float = 0.21,
               difficulty: float = 0.5, duplicates: dict | None = None, threads: int = 1) -> dict:
    """Write a synthetic RFMiD in the Kaggle-mirror layout; ``counts`` maps split -> n."""
    root = Path(root)
    rng = seeded(seed, "rfmid-plan")
    names = list(FREQ)
    p = np.array([FREQ[k] for k in names], float)
    p /= p.sum()
    jobs, tables = [], {}
    for split, (outer, folder, csv_name, *_) in SPLITS.items():
        d = root / outer / outer
        (d / folder).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(1, int(counts.get(split, 0)) + 1):
            labels = set()
            if rng.random() >= healthy_fraction:
                k = int(rng.choice([1, 1, 1, 2, 2, 3]))
                labels = set(rng.choice(names, size=k, replace=False, p=p).tolist())
            w, h = SIZES[int(rng.choice(3, p=[0.6, 0.15, 0.25]))]
            w, h = max(int(w * size_scale), 64), max(int(h * size_scale), 48)
            jobs.append((seed, split, i, sorted(labels), w, h, difficulty, d / folder / f"{i}.png"))
            rows.append([i, int(bool(labels))] + [int(c in labels) for c in DISEASES])
        tables[d / csv_name] = rows
    pmap(_synth_one, jobs, threads, desc="rfmid: synthesize PNGs")
    groups: dict = {}
    for j in jobs:   # healthy and diseased images, so that a copy keeps its label's kind
        groups.setdefault(bool(j[3]), []).append(j[7])
    planted = plant_duplicates(root, groups, seeded(seed, "rfmid-duplicates"), **(duplicates or {}))
    for path, rows in tables.items():
        with open(path, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(COLUMNS)
            w.writerows(rows)
    return {"labels": {(j[1], j[2]): j[3] for j in jobs}, "planted_duplicates": planted}


def _locate(root: Path, split: str) -> tuple[Path, Path] | None:
    outer, folder, csv_name, ieee_folder, ieee_csv = SPLITS[split]
    for d in (root / outer / outer, root / outer):
        if (d / csv_name).is_file() and (d / folder).is_dir():
            return d / folder, d / csv_name
    ieee_img = root / "1. Original Images" / ieee_folder
    ieee_lab = root / "2. Groundtruths" / ieee_csv
    if ieee_img.is_dir() and ieee_lab.is_file():
        return ieee_img, ieee_lab
    return None


def ingest(root: str | Path, threads: int = 1) -> IngestResult:
    root = Path(root)
    res = IngestResult()
    found = {s: _locate(root, s) for s in SPLITS}
    if not any(found.values()):
        raise DatasetLayoutError(f"{root}: expected Training_Set/Training_Set/RFMiD_Training_Labels.csv "
                                 "(Kaggle mirror) or '2. Groundtruths/' (IEEE DataPort)")
    for split, loc in found.items():
        if loc is None:
            res.reject(root / SPLITS[split][0], f"the {split} split (images + labels CSV) is missing")
            continue
        img_dir, csv_path = loc
        try:
            rows = labels_csv_rows(csv_path)
        except CsvDialectError as exc:
            res.reject(csv_path, str(exc), 0, "header")
            continue
        reader = iter(rows)
        header = [h.strip() for h in next(reader, [])]
        if header != COLUMNS:
            extra = sorted(set(header) - set(COLUMNS))
            lacking = [c for c in COLUMNS if c not in header]
            res.reject(csv_path, f"header does not match the 47 RFMiD columns (missing {lacking}, "
                                 f"unexpected {extra})", 0, "header")
            continue
        listed = set()
        for rowno, row in enumerate(reader, start=1):
            if len(row) != len(COLUMNS):
                res.reject(csv_path, f"expected {len(COLUMNS)} fields, found {len(row)}", rowno)
                continue
            values = dict(zip(COLUMNS, (v.strip() for v in row)))
            bad = next((c for c in COLUMNS[1:] if values[c] not in ("0", "1")), None)
            if not values["ID"].isdigit():
                res.reject(csv_path, f"ID is {values['ID']!r}, expected a positive integer", rowno, "ID")
                continue
            if bad:
                res.reject(csv_path, f"{bad} is {values[bad]!r}, expected 0 or 1", rowno, bad)
                continue
            labels = [c for c in DISEASES if values[c] == "1"]
            risk = values["Disease_Risk"] == "1"
            if risk != bool(labels):
                res.reject(csv_path, f"Disease_Risk={int(risk)} but {len(labels)} disease labels are set",
                           rowno, "Disease_Risk")
                continue
            img = img_dir / f"{values['ID']}.png"
            listed.add(img.name)
            if not img.is_file():
                res.reject(img, f"named by {csv_path.name} row {rowno} but the image is missing", rowno, "ID")
                continue
            res.add(f"{split}/{values['ID']}", img, label="diseased" if risk else "healthy", labels=labels,
                    source_split=split, csv_row=rowno)
        for f in sorted(img_dir.glob("*.png")):
            if f.name not in listed:
                res.reject(f, f"image has no row in {csv_path.name}", "", "ID")
    return res
