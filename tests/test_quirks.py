"""Quirks of real copies of the datasets, each on a file the test writes: label CSVs with a UTF-8
byte-order mark or CRLF line ends, CSVs re-saved with ';', DICOMs without a file meta header,
over-long decimal strings in DICOM headers."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.filebase import DicomBytesIO

from medrepro import datasets
from medrepro.dicom import NO_META_NOTE, native_dataset, read_dicom

RFMID_TRAIN = Path("Training_Set") / "Training_Set" / "RFMiD_Training_Labels.csv"
RSNA_LABELS = "stage_2_train_labels.csv"


def _resave(path: Path, bom: bool = False, crlf: bool = False, delimiter: str = ",") -> None:
    text = path.read_text().replace(",", delimiter)
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())


@pytest.mark.parametrize("bom,crlf", [(True, False), (False, True), (True, True)])
def test_rfmid_labels_with_bom_and_crlf_read_as_the_original(raw, tmp_path, bom, crlf):
    root, _ = raw
    want = datasets.rfmid.ingest(root / "rfmid").manifest
    d = tmp_path / "rfmid"
    shutil.copytree(root / "rfmid", d)
    for csv_path in d.rglob("*.csv"):
        _resave(csv_path, bom=bom, crlf=crlf)
    assert (d / RFMID_TRAIN).read_bytes().startswith(b"\xef\xbb\xbfID" if bom else b"ID")
    res = datasets.rfmid.ingest(d)
    assert res.rejections.empty, res.rejections.to_dict("records")
    got = res.manifest
    assert got[["image_id", "label", "labels", "source_split"]].equals(want[["image_id", "label", "labels",
                                                                            "source_split"]])


def test_rsna_labels_with_bom_and_crlf_read_as_the_original(raw, tmp_path):
    root, _ = raw
    want = datasets.rsna.ingest(root / "rsna").manifest
    d = tmp_path / "rsna"
    shutil.copytree(root / "rsna", d)
    _resave(d / RSNA_LABELS, bom=True, crlf=True)
    _resave(d / "stage_2_detailed_class_info.csv", bom=True, crlf=True)
    res = datasets.rsna.ingest(d)
    assert res.rejections.empty, res.rejections.to_dict("records")
    assert res.manifest[["image_id", "label", "boxes"]].equals(want[["image_id", "label", "boxes"]])


def test_semicolon_csv_is_named_not_misread(raw, tmp_path):
    root, _ = raw
    d = tmp_path / "rfmid"
    shutil.copytree(root / "rfmid", d)
    _resave(d / RFMID_TRAIN, delimiter=";")
    res = datasets.rfmid.ingest(d)
    rej = res.rejections
    row = rej[rej["file"].str.endswith("RFMiD_Training_Labels.csv")].iloc[0]
    assert "semicolons (';')" in row["reason"] and "expected commas" in row["reason"] and row["field"] == "header"
    assert set(res.manifest["source_split"]) == {"val", "test"}  # the other splits still read
    r = tmp_path / "rsna"
    shutil.copytree(root / "rsna", r)
    _resave(r / RSNA_LABELS, delimiter=";")
    with pytest.raises(ValueError, match=r"stage_2_train_labels.csv: the header 'patientId;x;y.*semicolons"):
        datasets.rsna.ingest(r)


def _without_file_meta(ds: pydicom.Dataset, path: Path, implicit: bool = True) -> Path:
    """The dataset alone, no preamble, no 'DICM', no file meta group (as some archives store them)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    pydicom.filewriter.write_dataset(fp, ds.copy())
    path.write_bytes(fp.getvalue())
    return path


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_dicom_without_file_meta_is_read_with_a_note(tmp_path, implicit):
    pixels = (np.arange(40 * 50).reshape(40, 50) % 4096).astype(np.uint16)
    ds = native_dataset(pixels)
    path = _without_file_meta(ds, tmp_path / "bare.dcm", implicit)
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(path)  # what plain pydicom says
    img = read_dicom(path)
    assert NO_META_NOTE in img.notes
    ref = read_dicom(_save_normal(ds, tmp_path / "normal.dcm"))
    assert np.array_equal(img.pixels, ref.pixels)


def _save_normal(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def test_rsna_dicom_without_file_meta_is_noted_in_the_manifest(raw, tmp_path):
    root, _ = raw
    d = tmp_path / "rsna"
    shutil.copytree(root / "rsna", d)
    first = sorted((d / "stage_2_train_images").glob("*.dcm"))[0]
    ds = pydicom.dcmread(first)
    ds.decompress()  # a bare dataset has no transfer syntax to say it is JPEG
    _without_file_meta(ds, first, implicit=False)
    res = datasets.rsna.ingest(d)
    row = res.manifest.set_index("image_id").loc[first.stem]
    assert NO_META_NOTE in row["meta"]
    assert res.rejections.empty


def test_over_long_decimal_strings_are_tolerated(tmp_path):
    pixels = (np.arange(30 * 30).reshape(30, 30) % 256).astype(np.uint16)
    ds = native_dataset(pixels)
    # DS values may hold 16 characters; scanners and converters write more
    with pytest.warns(UserWarning, match="exceeds the maximum length of 16"):
        ds.add_new("PixelSpacing", "DS", ["0.14300000000000001", "0.14300000000000001"])
        ds.add_new("RescaleSlope", "DS", "1.00000000000000000")
        ds.add_new("RescaleIntercept", "DS", "0.000000000000000000")
    path = tmp_path / "long.dcm"
    ds.save_as(path, enforce_file_format=True)
    img = read_dicom(path, header_fields=("PixelSpacing",))
    assert img.pixels.shape == (30, 30) and "0.143" in img.meta["PixelSpacing"]
