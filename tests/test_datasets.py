"""Each synthetic dataset, read back by its reader, gives what it was generated with."""
from __future__ import annotations

import csv
import json
import zipfile
from collections import Counter

import h5py
import numpy as np
import pydicom
import pytest

from medrepro import datasets
from medrepro.datasets.kermany import parse_name

from .conftest import KERMANY_COUNTS


def test_rsna_read_back(raw):
    root, plans = raw
    res = datasets.rsna.ingest(root / "rsna")
    m = res.manifest
    assert res.rejections.empty
    assert len(m) == 16  # the test images carry no labels and are not ingested
    boxes = plans["rsna"]["boxes"]
    for row in m.itertuples():
        got = json.loads(row.boxes)
        want = [list(b) for b in boxes[row.image_id]] if row.label == "pneumonia" else []
        assert np.allclose(got, want, atol=0.051), row.image_id  # written with one decimal
        assert row.patient_id == row.image_id
    # the labels CSV has one row per box, floats, empty fields for negatives
    rows = list(csv.reader(open(root / "rsna" / "stage_2_train_labels.csv")))
    assert rows[0] == ["patientId", "x", "y", "width", "height", "Target"]
    n_boxes = sum(len(json.loads(b)) for b in m["boxes"])
    assert len(rows) - 1 == n_boxes + (m["label"] == "normal").sum()
    neg = next(r for r in rows[1:] if r[5] == "0")
    assert neg[1:5] == ["", "", "", ""]
    pos = next(r for r in rows[1:] if r[5] == "1")
    assert "." in pos[1]


def test_rsna_dicom_tags(raw):
    root, _ = raw
    f = next((root / "rsna" / "stage_2_train_images").glob("*.dcm"))
    ds = pydicom.dcmread(f)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.PatientID == f.stem == str(ds.PatientName)
    assert ds.Modality == "CR" and ds.BitsStored == 8 and ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.ViewPosition in ("AP", "PA") and ds.SeriesDescription == f"view: {ds.ViewPosition}"
    assert ds.PatientAge.isdigit() and ds.PatientSex in ("M", "F")
    assert ds.SOPInstanceUID.startswith("1.2.276.0.7230010.3.")
    assert ds.pixel_array.shape == (256, 256)


def test_kermany_read_back(raw):
    root, plans = raw
    res = datasets.kermany.ingest(root / "kermany")
    m = res.manifest
    plan = plans["kermany"]["plan"]
    # the nested chest_xray/chest_xray duplicate and .DS_Store are not read
    assert len(m) == len(plan) == sum(sum(c.values()) for c in KERMANY_COUNTS.values())
    assert res.rejections.empty
    got = Counter(zip(m["source_split"], m["label"]))
    assert got == Counter((p["split"], p["label"]) for p in plan)
    by_stem = {p["stem"]: p for p in plan}
    for row in m.itertuples():
        stem = row.image_id.split("/")[-1]
        assert row.patient_id == by_stem[stem]["patient_id"]
    # class-dependent sizes as in the real set: NORMAL images are larger on average
    meta = m["meta"].map(json.loads)
    widths = meta.map(lambda d: d["width"])
    assert widths[m["label"] == "NORMAL"].mean() > widths[m["label"] == "PNEUMONIA"].mean()
    # some patients straddle train and test, as in the real set
    splits = m.groupby("patient_id")["source_split"].nunique()
    assert (splits > 1).any()


@pytest.mark.parametrize("stem,pid,sub", [
    ("person1946_bacteria_4874", "person1946", "bacteria"),
    ("person997_virus_1678", "person997", "virus"),
    ("IM-0115-0001", "IM-0115", ""),
    ("IM-0011-0001-0002", "IM-0011", ""),
    ("NORMAL2-IM-0927-0001", "NORMAL2-IM-0927", ""),
    ("VIRUS-355597-0002", "355597", "virus"),
    ("odd_name", None, ""),
])
def test_kermany_names(stem, pid, sub):
    assert parse_name(stem) == (pid, sub)


def test_covid_read_back(raw):
    root, plans = raw
    res = datasets.covid.ingest(root / "covid")
    m = res.manifest
    assert res.rejections.empty
    assert m["label"].value_counts().to_dict() == {k: v for k, v in plans["covid"]["counts"].items() if v}
    assert (m["mask_path"] != "").all()
    # Normal sheet names are upper-case (NORMAL-1) yet matched to Normal-1.png
    normal = m[m["label"] == "Normal"]
    assert normal["meta"].map(lambda s: json.loads(s).get("xlsx_row")).notna().all()


def test_brain_tumor_read_back(raw):
    root, plans = raw
    res = datasets.brain_tumor.ingest(root / "brain_tumor")
    m = res.manifest
    slices = plans["brain_tumor"]["slices"]
    assert res.rejections.empty  # cvind.mat and README.txt are not images and are skipped
    assert len(m) == len(slices)
    want = {str(s["number"]): (s["label"], s["pid"]) for s in slices}
    for row in m.itertuples():
        assert (row.label, row.patient_id) == want[row.image_id]
        assert "::" in row.path  # read from inside the zips
    assert len(list((root / "brain_tumor").glob("brainTumorDataPublic_*.zip"))) == 4


def test_brain_tumor_mat_layout(raw):
    """The .mat members are MATLAB v7.3 files laid out as the spec says (image stored transposed)."""
    root, _ = raw
    z = sorted((root / "brain_tumor").glob("brainTumorDataPublic_1-*.zip"))[0]
    with zipfile.ZipFile(z) as zf:
        data = zf.read("1.mat")
    assert data[:19] == b"MATLAB 7.3 MAT-file"
    import io

    with h5py.File(io.BytesIO(data), "r") as f:
        g = f["cjdata"]
        assert g["label"].shape == (1, 1) and g["label"].dtype == np.float64
        assert g["PID"].dtype == np.uint16 and g["PID"].shape[1] == 1
        assert g["image"].dtype == np.int16
        assert g["tumorBorder"].shape[0] == 1 and g["tumorMask"].dtype == np.uint8
        img, mask = np.asarray(g["image"]).T, np.asarray(g["tumorMask"]).T
    d = datasets.brain_tumor.read_mat73(data)
    assert np.array_equal(d["image"], img) and np.array_equal(d["mask"], mask)
    # the border polygon surrounds the mask: its centroid lies inside the tumour
    cx, cy = d["border"].mean(0)
    assert d["mask"][int(round(cy)), int(round(cx))] == 1


def test_rfmid_read_back(raw):
    root, plans = raw
    res = datasets.rfmid.ingest(root / "rfmid")
    m = res.manifest
    assert res.rejections.empty
    assert m["source_split"].value_counts().to_dict() == {"train": 8, "val": 3, "test": 3}
    labels = plans["rfmid"]["labels"]
    for row in m.itertuples():
        split, i = row.image_id.split("/")
        want = labels[(split, int(i))]
        assert sorted(row.labels.split(";")) == sorted(want) if want else row.labels == ""
        assert row.label == ("diseased" if want else "healthy")
    header = next(csv.reader(open(root / "rfmid" / "Training_Set" / "Training_Set" / "RFMiD_Training_Labels.csv")))
    assert len(header) == 47 and header[:3] == ["ID", "Disease_Risk", "DR"]


def test_synthesis_is_deterministic(tmp_path):
    a = datasets.covid.synthesize(tmp_path / "a", 11, {"COVID": 2}, image_size=48, mask_size=32)
    b = datasets.covid.synthesize(tmp_path / "b", 11, {"COVID": 2}, image_size=48, mask_size=32, threads=2)
    assert a == b
    for f in ("COVID/images/COVID-1.png", "COVID/masks/COVID-2.png"):
        pa = tmp_path / "a" / "COVID-19_Radiography_Dataset" / f
        pb = tmp_path / "b" / "COVID-19_Radiography_Dataset" / f
        assert pa.read_bytes() == pb.read_bytes()


def test_brain_slices_of_one_patient_share_the_scan_and_without_patient_structure_do_not():
    from medrepro.synth.phantoms import brain_mri

    def centre(s):
        ys, xs = np.nonzero(s.mask)
        return np.array([ys.mean(), xs.mean()])

    def spread(slices):   # mean distance of the tumour centres from their mean, and of the images
        c = np.array([centre(s) for s in slices])
        im = np.array([s.image.astype(float) for s in slices])
        return np.linalg.norm(c - c.mean(0), axis=1).mean(), np.abs(im - im.mean(0)).mean()

    one_patient = [brain_mri(np.random.default_rng(k), 128, "glioma", 0.15, patient_rng=np.random.default_rng(99))
                   for k in range(5)]
    many_patients = [brain_mri(np.random.default_rng(k), 128, "glioma", 0.15,
                               patient_rng=np.random.default_rng(100 + k)) for k in range(5)]
    independent = [brain_mri(np.random.default_rng(k), 128, "glioma", 0.15) for k in range(5)]
    (c1, i1), (c2, i2), (c3, i3) = spread(one_patient), spread(many_patients), spread(independent)
    assert c1 < 0.5 * c2 and c1 < 0.5 * c3   # one patient: the tumour stays where it is
    assert i1 < 0.7 * i2 and i1 < 0.7 * i3   # and the slices look alike
