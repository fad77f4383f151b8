"""RSNA Pneumonia Detection Challenge (Kaggle 2018, stage 2).

Layout, as downloaded from https://www.kaggle.com/c/rsna-pneumonia-detection-challenge ::

    stage_2_train_labels.csv          patientId,x,y,width,height,Target (one row per box)
    stage_2_detailed_class_info.csv   patientId,class (duplicated per box; joined on patientId)
    stage_2_sample_submission.csv
    stage_2_train_images/<patientId>.dcm   JPEG Baseline, 8-bit MONOCHROME2
    stage_2_test_images/<patientId>.dcm    unlabelled; not ingested

The reader joins both CSVs on ``patientId`` (their row alignment is not
guaranteed), checks every row, reads each DICOM header (not its pixels) and
emits one manifest row per labelled image with its boxes.
"""
from __future__ import annotations

import csv
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..dicom import dcmread, rsna_dataset
from ..parallel import pmap, seeded
from ..synth.phantoms import chest_radiograph
from .base import IngestResult, labels_csv_rows, require_dir

NAME = "rsna"
LABELS_CSV = "stage_2_train_labels.csv"
CLASS_CSV = "stage_2_detailed_class_info.csv"
TRAIN_DIR = "stage_2_train_images"
TEST_DIR = "stage_2_test_images"
CLASSES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
HEADER_FIELDS = ("PatientID", "PatientAge", "PatientSex", "ViewPosition", "PixelSpacing", "Modality")
SPACINGS = (0.143, 0.168, 0.139, 0.171, 0.194)


# ----------------------------------------------------------------------------- synthesize
def _synth_one(args):
    seed, i, pid, cls, size, difficulty, out_dir = args
    rng = seeded(seed, "rsna", i)
    positive = cls == "Lung Opacity"
    finding = {"Normal": "none", "Lung Opacity": "lobar", "No Lung Opacity / Not Normal": "abnormal"}.get(cls, "none")
    img = chest_radiograph(rng, size, size, finding, difficulty)
    # ViewPosition is a shortcut in the real set: AP for 78% of positives, 36% of negatives
    view = "AP" if rng.random() < (0.78 if positive else 0.36) else "PA"
    sex = "M" if rng.random() < 0.57 else "F"
    age = int(np.clip(rng.normal(47, 17), 1, 92))
    ds = rsna_dataset(img.image, pid, age, sex, view, float(rng.choice(SPACINGS)), uid_rng=rng)
    ds.save_as(Path(out_dir) / f"{pid}.dcm", enforce_file_format=True)
    return img.boxes


def synthesize(root: str | Path, seed: int, n_train: int, n_test: int = 0, positive_fraction: float = 0.3,
               abnormal_fraction: float = 0.4, image_size: int = 1024, difficulty: float = 0.5,
               threads: int = 1) -> dict:
    """Write a synthetic RSNA stage-2 bundle under ``root`` in the real layout.

    ``positive_fraction`` of the training images are 'Lung Opacity' (1-4
    boxes); of the rest ``abnormal_fraction`` are 'No Lung Opacity / Not
    Normal'.  Returns a summary with the counts and boxes written.
    """
    root = Path(root)
    rng = seeded(seed, "rsna-plan")
    (root / TRAIN_DIR).mkdir(parents=True, exist_ok=True)
    (root / TEST_DIR).mkdir(parents=True, exist_ok=True)
    pids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n_train + n_test)]
    classes = []
    for _ in range(n_train):
        u = rng.random()
        classes.append("Lung Opacity" if u < positive_fraction else
                       "No Lung Opacity / Not Normal" if rng.random() < abnormal_fraction else "Normal")
    jobs = [(seed, i, pids[i], classes[i], image_size, difficulty, root / TRAIN_DIR) for i in range(n_train)]
    jobs += [(seed, i, pids[i], str(rng.choice(CLASSES)), image_size, difficulty, root / TEST_DIR)
             for i in range(n_train, n_train + n_test)]
    boxes = pmap(_synth_one, jobs, threads, desc="rsna: synthesize DICOMs")
    with open(root / LABELS_CSV, "w", newline="") as fl, open(root / CLASS_CSV, "w", newline="") as fc:
        wl, wc = csv.writer(fl, lineterminator="\n"), csv.writer(fc, lineterminator="\n")
        wl.writerow(["patientId", "x", "y", "width", "height", "Target"])
        wc.writerow(["patientId", "class"])
        for pid, cls, bxs in zip(pids[:n_train], classes, boxes[:n_train]):
            if cls == "Lung Opacity" and bxs:
                for x, y, w, h in bxs:
                    wl.writerow([pid, f"{x:.1f}", f"{y:.1f}", f"{w:.1f}", f"{h:.1f}", 1])
                    wc.writerow([pid, cls])
            else:
                if cls == "Lung Opacity":  # a drawn opacity can vanish only if it fell outside; relabel
                    cls = "No Lung Opacity / Not Normal"
                wl.writerow([pid, "", "", "", "", 0])
                wc.writerow([pid, cls])
    with open(root / "stage_2_sample_submission.csv", "w") as f:
        f.write("patientId,PredictionString\n")
        for pid in pids[n_train:]:
            f.write(f"{pid},0.5 0 0 100 100\n")
    (root / "GCP Credits Request Link - RSNA.txt").write_text("synthetic stand-in\n")
    return {"n_train": n_train, "n_test": n_test, "boxes": {p: b for p, b in zip(pids, boxes)}}


# ----------------------------------------------------------------------------- ingest
def _read_header(path: Path) -> tuple[dict | None, str | None]:
    try:
        ds, notes = dcmread(path, stop_before_pixels=True)
        meta = {k: str(ds.get(k, "")) for k in HEADER_FIELDS}
        meta.update(rows=int(ds.Rows), columns=int(ds.Columns))
        if notes:
            meta["dicom_note"] = "; ".join(notes)
        return meta, None
    except Exception as exc:
        return None, str(exc)


def _float(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def ingest(root: str | Path, threads: int = 1) -> IngestResult:
    """Read the RSNA bundle at ``root`` into a manifest (labelled training images)."""
    root = Path(root)
    res = IngestResult()
    img_dir = require_dir(root / TRAIN_DIR, f"the RSNA training DICOM folder '{TRAIN_DIR}'")
    labels_path, class_path = root / LABELS_CSV, root / CLASS_CSV
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path}: the RSNA labels CSV is missing")
    per_patient = _read_labels(labels_path, res)
    classes = _read_classes(class_path, res) if class_path.is_file() else {}
    candidates = []
    for pid, entry in per_patient.items():
        dcm = img_dir / f"{pid}.dcm"
        if entry["bad"]:
            res.reject(dcm, "dropped because a labels row of this patient was rejected (see above)", "", "patientId")
            continue
        if len(entry["targets"]) > 1:
            res.reject(labels_path, f"patient {pid} has both Target 0 and 1 rows", "", "Target")
            continue
        positive = "1" in entry["targets"]
        cls = classes.get(pid, "Lung Opacity" if positive else "")
        if (cls == "Lung Opacity") != positive:
            res.reject(class_path, f"patient {pid}: class {cls!r} contradicts Target={int(positive)}", "", "class")
            continue
        if not dcm.is_file():
            res.reject(dcm, f"listed in {LABELS_CSV} but the DICOM file is missing", "", "patientId")
            continue
        candidates.append((pid, dcm, positive, cls, entry["boxes"]))
    _add_images(candidates, labels_path, res, threads)
    listed = set(per_patient)
    for dcm in sorted(img_dir.glob("*.dcm")):
        if dcm.stem not in listed:
            res.reject(dcm, f"DICOM file has no row in {LABELS_CSV}", "", "patientId")
    return res


def _read_labels(labels_path: Path, res: IngestResult) -> "OrderedDict[str, dict]":
    """patientId -> its targets, boxes and whether a row of it was rejected (each rejection named)."""
    per_patient: "OrderedDict[str, dict]" = OrderedDict()
    reader = iter(labels_csv_rows(labels_path))
    header = next(reader, [])
    expected = ["patientId", "x", "y", "width", "height", "Target"]
    if header != expected:
        raise ValueError(f"{labels_path}: header is {header}, expected {expected}")
    for rowno, row in enumerate(reader, start=1):
        if len(row) != 6:
            res.reject(labels_path, f"expected 6 fields, found {len(row)}", rowno)
            continue
        pid, *box, target = row
        if not pid:
            res.reject(labels_path, "empty patientId", rowno, "patientId")
            continue
        if target not in ("0", "1"):
            res.reject(labels_path, f"Target is {target!r}, expected 0 or 1", rowno, "Target")
            per_patient.setdefault(pid, {"targets": set(), "boxes": [], "bad": True})["bad"] = True
            continue
        entry = per_patient.setdefault(pid, {"targets": set(), "boxes": [], "bad": False})
        entry["targets"].add(target)
        if target == "1":
            _add_box(entry, box, labels_path, rowno, res)
        elif any(box):
            res.reject(labels_path, "Target=0 row has box coordinates, expected empty fields", rowno, "x")
            entry["bad"] = True
    return per_patient


def _add_box(entry: dict, box: list, labels_path: Path, rowno: int, res: IngestResult) -> None:
    vals = [_float(v) for v in box]
    names = ["x", "y", "width", "height"]
    bad = [n for n, v in zip(names, vals) if v is None]
    if bad:
        res.reject(labels_path, f"{bad[0]} is {box[names.index(bad[0])]!r}, expected a number", rowno, bad[0])
        entry["bad"] = True
    elif vals[2] <= 0 or vals[3] <= 0:
        res.reject(labels_path, f"box {vals} has a non-positive width or height", rowno, "width")
        entry["bad"] = True
    else:
        entry["boxes"].append(vals)


def _read_classes(class_path: Path, res: IngestResult) -> dict[str, str]:
    """patientId -> its detailed class (stage_2_detailed_class_info.csv), each bad row named."""
    classes: dict[str, str] = {}
    reader = iter(labels_csv_rows(class_path))
    names = next(reader, [])
    for rowno, values in enumerate(reader, start=1):
        row = dict(zip(names, values))
        cls = row.get("class", "")
        if cls not in CLASSES:
            res.reject(class_path, f"class is {cls!r}, expected one of {list(CLASSES)}", rowno, "class")
            continue
        pid = row.get("patientId", "")
        if classes.setdefault(pid, cls) != cls:
            res.reject(class_path, f"patient {pid} has classes {classes[pid]!r} and {cls!r}", rowno, "class")
    return classes


def _add_images(candidates: list, labels_path: Path, res: IngestResult, threads: int) -> None:
    """Read each candidate's DICOM header (in ``threads`` threads) and add it to the manifest, or
    reject it (an unreadable header, a box outside the image)."""
    headers = pmap(_read_header, [c[1] for c in candidates], threads, desc="rsna: read DICOM headers")
    for (pid, dcm, positive, cls, boxes), (meta, err) in zip(candidates, headers):
        if err:
            res.reject(dcm, f"unreadable DICOM header ({err})")
            continue
        rows, cols = meta["rows"], meta["columns"]
        meta["detailed_class"] = cls or "unknown"
        if meta["PatientID"] != pid:
            meta["note"] = f"PatientID tag {meta['PatientID']!r} differs from the file stem"
        outside = [b for b in boxes if b[0] < 0 or b[1] < 0 or b[0] + b[2] > cols + 0.5 or b[1] + b[3] > rows + 0.5]
        if outside:
            res.reject(labels_path, f"patient {pid}: box {outside[0]} lies outside the {cols}x{rows} image", "", "x")
            continue
        # patientId names one image, not one person (specs): it is the grouping key we have
        res.add(pid, dcm, label="pneumonia" if positive else "normal", patient_id=pid, source_split="train",
                boxes=boxes, **meta)
