"""Figshare brain tumour dataset (Cheng et al., figshare 1512427 v5).

Layout (doi:10.6084/m9.figshare.1512427.v5): four zips
``brainTumorDataPublic_<a>-<b>.zip`` whose members are ``N.mat`` at the zip
root, plus ``README.txt`` and ``cvind.mat`` (fold numbers, not an image).
Each ``N.mat`` is MATLAB v7.3 (HDF5) with the group ``cjdata``:

========== =========== ======== ==========================================
key        h5py shape  dtype    meaning
========== =========== ======== ==========================================
label      (1, 1)      float64  1 meningioma, 2 glioma, 3 pituitary
PID        (N, 1)      uint16   ASCII codes of the patient id
image      (W, H)      int16    stored column-major: ``.T`` gives (H, W)
tumorBorder (1, M)     float64  [x1, y1, x2, y2, ...] in MATLAB orientation
tumorMask  (W, H)      uint8    0/1, also ``.T``
========== =========== ======== ==========================================

The reader accepts the zips and/or loose ``N.mat`` files.  Paths in the
manifest are ``<zip>::<member>`` for zip members.
"""
from __future__ import annotations

import io
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from ..parallel import pmap, seeded
from ..synth.phantoms import brain_mri
from .base import DatasetLayoutError, IngestResult

NAME = "brain_tumor"
LABELS = {1: "meningioma", 2: "glioma", 3: "pituitary"}
_MAT_RE = re.compile(r"^(\d+)\.mat$")


# ----------------------------------------------------------------------------- MATLAB v7.3
def _mat73_header() -> bytes:
    text = (f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
            f"{datetime(2017, 4, 2, tzinfo=timezone.utc):%a %b %d %H:%M:%S %Y} HDF5 schema 1.00 .").encode()
    return text.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM"


def write_mat73(path_or_buf, label: int, pid: str, image: np.ndarray, mask: np.ndarray, border: np.ndarray) -> None:
    """Write one ``N.mat`` as figshare ships it (HDF5 with a 512-byte MATLAB userblock).

    ``image`` (int16) and ``mask`` are given as displayed, (H, W); they are stored
    transposed, as MATLAB's column-major layout appears to h5py.
    """
    with h5py.File(path_or_buf, "w", userblock_size=512, libver="earliest") as f:
        g = f.create_group("cjdata")
        g.attrs["MATLAB_class"] = np.bytes_("struct")
        d = g.create_dataset("label", data=np.array([[float(label)]]))
        d.attrs["MATLAB_class"] = np.bytes_("double")
        d = g.create_dataset("PID", data=np.array([[ord(ch)] for ch in pid], dtype=np.uint16))
        d.attrs["MATLAB_class"] = np.bytes_("char")
        d.attrs["MATLAB_int_decode"] = np.int32(2)
        d = g.create_dataset("image", data=np.ascontiguousarray(image.astype(np.int16).T))
        d.attrs["MATLAB_class"] = np.bytes_("int16")
        d = g.create_dataset("tumorBorder", data=border.reshape(1, -1).astype(np.float64))
        d.attrs["MATLAB_class"] = np.bytes_("double")
        d = g.create_dataset("tumorMask", data=np.ascontiguousarray(mask.astype(np.uint8).T))
        d.attrs["MATLAB_class"] = np.bytes_("logical")
        d.attrs["MATLAB_int_decode"] = np.int32(1)
    header = _mat73_header()
    if isinstance(path_or_buf, (str, Path)):
        with open(path_or_buf, "r+b") as fh:
            fh.write(header)
    else:
        pos = path_or_buf.tell()
        path_or_buf.seek(0)
        path_or_buf.write(header)
        path_or_buf.seek(pos)


def read_mat73(source) -> dict:
    """Read one figshare ``N.mat`` (path, bytes or file object).

    Returns ``label`` (int), ``pid`` (str), ``image`` (int16, H x W), ``mask``
    (uint8, H x W) and ``border`` (float, M x 2).  Raises ValueError naming the
    missing or malformed key.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    with h5py.File(source, "r") as f:
        if "cjdata" not in f:
            raise ValueError("no 'cjdata' group (is this a brain-tumour .mat file?)")
        g = f["cjdata"]
        for key in ("label", "PID", "image", "tumorMask"):
            if key not in g:
                raise ValueError(f"cjdata/{key} is missing")
        label = int(round(float(np.asarray(g["label"]).ravel()[0])))
        pid = "".join(map(chr, np.asarray(g["PID"]).ravel()))
        image = np.asarray(g["image"]).T
        mask = np.asarray(g["tumorMask"]).T
        border = np.asarray(g["tumorBorder"]).reshape(-1, 2) if "tumorBorder" in g else np.zeros((0, 2))
    if image.shape != mask.shape:
        raise ValueError(f"cjdata/tumorMask shape {mask.shape} differs from cjdata/image shape {image.shape}")
    return {"label": label, "pid": pid, "image": image, "mask": mask, "border": border}


# ----------------------------------------------------------------------------- synthesize
def _synth_one(args):
    seed, number, label, pid, size, difficulty, patient_structure = args
    rng = seeded(seed, "brain", number)
    s = brain_mri(rng, size, LABELS[label], difficulty,
                  patient_rng=seeded(seed, "brain-patient", pid) if patient_structure else None)
    buf = io.BytesIO()
    write_mat73(buf, label, pid, s.image, s.mask, s.border)
    return number, buf.getvalue()


def synthesize(root: str | Path, seed: int, patients: dict, slices_per_patient: tuple[int, int] = (1, 6),
               image_size: int = 512, small_fraction: float = 0.005, difficulty: float = 0.5,
               n_zips: int = 4, patient_structure: bool = True, threads: int = 1) -> dict:
    """Write synthetic figshare zips under ``root``.

    ``patients`` maps class name -> number of patients; each patient gets
    ``slices_per_patient`` (inclusive range) slices of one class.  A
    ``small_fraction`` of slices are half size (the real set has 15 at 256 px).
    ``patient_structure``: a patient's slices share the head, the tumour's site and shape and the
    intensity scale, as neighbouring slices of one scan do (what makes a split by slice leak);
    false draws every slice as a new patient (a control).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = seeded(seed, "brain-plan")
    inv = {v: k for k, v in LABELS.items()}
    slices = []
    used = set()
    for cls, n in patients.items():
        if cls not in inv:
            raise ValueError(f"unknown brain tumour class {cls!r}; expected one of {list(inv)}")
        for _ in range(int(n)):
            while True:
                if cls == "glioma" and rng.random() < 0.4:
                    pid = f"MR{rng.integers(10000, 99999):06d}" + str(rng.choice(["", "", "B", "C"]))
                else:
                    pid = str(rng.integers(10000, 120000))
                if pid not in used:
                    used.add(pid)
                    break
            k = int(rng.integers(slices_per_patient[0], slices_per_patient[1] + 1))
            slices += [(inv[cls], pid)] * k
    # the figshare numbering keeps each patient's slices together, patients in random order
    order = rng.permutation(len(slices))
    by_patient: dict[str, list] = {}
    for i in order:
        by_patient.setdefault(slices[i][1], []).append(slices[i])
    ordered = [s for p in by_patient.values() for s in p]
    jobs = [(seed, n, lab, pid, image_size // 2 if rng.random() < small_fraction else image_size, difficulty,
             patient_structure)
            for n, (lab, pid) in enumerate(ordered, start=1)]
    results = dict(pmap(_synth_one, jobs, threads, desc="brain_tumor: synthesize .mat"))
    total = len(jobs)
    bounds = np.linspace(0, total, n_zips + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a:
            continue
        with zipfile.ZipFile(root / f"brainTumorDataPublic_{a + 1}-{b}.zip", "w", zipfile.ZIP_DEFLATED) as z:
            for n in range(a + 1, b + 1):
                z.writestr(f"{n}.mat", results[n])
    with h5py.File(root / "cvind.mat", "w", userblock_size=512) as f:
        f.create_dataset("cvind", data=rng.integers(1, 6, (1, total)).astype(np.float64))
    with open(root / "cvind.mat", "r+b") as fh:
        fh.write(_mat73_header())
    (root / "README.txt").write_text("Synthetic stand-in for the figshare brain tumor dataset (1512427).\n")
    return {"slices": [{"number": n, "label": LABELS[lab], "pid": pid} for n, (lab, pid) in enumerate(ordered, 1)]}


# ----------------------------------------------------------------------------- ingest
def _sources(root: Path) -> list[tuple[str, str, Path, str | None]]:
    """(number, path-for-manifest, container, member) for every N.mat under root."""
    out = []
    for z in sorted(root.glob("*.zip")):
        with zipfile.ZipFile(z) as zf:
            for name in zf.namelist():
                m = _MAT_RE.match(Path(name).name)
                if m:
                    out.append((m.group(1), f"{z}::{name}", z, name))
    for f in sorted(root.rglob("*.mat")):
        m = _MAT_RE.match(f.name)
        if m:
            out.append((m.group(1), str(f), f, None))
    return out


def load_member(path: str) -> bytes:
    """Bytes of ``file`` or of ``archive.zip::member``."""
    if "::" in path:
        zpath, member = path.split("::", 1)
        with zipfile.ZipFile(zpath) as zf:
            return zf.read(member)
    return Path(path).read_bytes()


def _read_one(item):
    number, mpath, _, _ = item
    try:
        d = read_mat73(load_member(mpath))
    except Exception as exc:
        return number, mpath, None, f"{type(exc).__name__}: {exc}"
    return number, mpath, {"label": d["label"], "pid": d["pid"], "shape": list(d["image"].shape),
                           "tumour_pixels": int(d["mask"].sum()), "border_points": len(d["border"])}, None


def ingest(root: str | Path, threads: int = 1) -> IngestResult:
    """Read every ``N.mat`` (in zips or loose) into a manifest; ``image_id`` is N."""
    root = Path(root)
    items = _sources(root)
    if not items:
        raise DatasetLayoutError(f"{root}: expected brainTumorDataPublic_*.zip or N.mat files (none found)")
    res = IngestResult()
    seen: dict[str, str] = {}
    for number, mpath, info, err in pmap(_read_one, items, threads, desc="brain_tumor: read .mat"):
        if err:
            res.reject(mpath, f"cannot read MATLAB v7.3 file: {err}")
            continue
        if number in seen:
            res.reject(mpath, f"slice {number} already read from {seen[number]}", "", "image_id")
            continue
        if info["label"] not in LABELS:
            res.reject(mpath, f"cjdata/label is {info['label']}, expected 1, 2 or 3", "", "label")
            continue
        if not info["pid"].strip():
            res.reject(mpath, "cjdata/PID is empty", "", "PID")
            continue
        seen[number] = mpath
        res.add(number, mpath, label=LABELS[info["label"]], patient_id=info["pid"].strip(), mask_path=mpath,
                height=info["shape"][0], width=info["shape"][1], tumour_pixels=info["tumour_pixels"],
                border_points=info["border_points"])
    return res
