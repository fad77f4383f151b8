"""DICOM decoding across transfer syntaxes and photometric interpretations."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from medrepro.dicom import DicomError, native_dataset, read_dicom, rsna_dataset


def _gradient(dtype=np.uint16, hi=4095, shape=(40, 50)):
    rng = np.random.default_rng(0)
    a = np.linspace(0, hi, shape[0] * shape[1]).reshape(shape)
    a = a + rng.integers(0, 3, shape)
    return np.clip(a, 0, hi).astype(dtype)


def _save(ds, path, ts=None):
    if ts is not None:
        ds.file_meta.TransferSyntaxUID = ts
    ds.save_as(path, enforce_file_format=True)
    return path


def _minmax(a):
    a = a.astype(float)
    return np.rint((a - a.min()) * 255 / (a.max() - a.min())).astype(np.uint8)


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, "compress:RLE",
                                "compress:J2K", "compress:JLS"])
def test_lossless_syntaxes_decode_exactly(tmp_path, ts):
    arr = _gradient()
    ds = native_dataset(arr)
    ds.BitsStored, ds.HighBit = 12, 11
    if ts.startswith("compress:"):
        ds.compress({"compress:RLE": RLELossless, "compress:J2K": JPEG2000Lossless,
                     "compress:JLS": JPEGLSLossless}[ts])
        path = _save(ds, tmp_path / "x.dcm")
    else:
        path = _save(ds, tmp_path / "x.dcm", ts)
    out = read_dicom(path)
    assert out.meta["transfer_syntax"] == str(pydicom.dcmread(path).file_meta.TransferSyntaxUID)
    assert np.array_equal(out.pixels, _minmax(arr))


def test_big_endian(tmp_path):
    arr = _gradient()
    ds = native_dataset(arr)
    ds.PixelData = arr.astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    path = tmp_path / "be.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=False)
    out = read_dicom(path)
    assert np.array_equal(out.pixels, _minmax(arr))


def test_jpeg_baseline_rsna_like(tmp_path):
    arr = _gradient(np.uint8, 255, (64, 64))
    ds = rsna_dataset(arr, "abc", 51, "F", "AP", 0.143)
    path = _save(ds, tmp_path / "abc.dcm")
    out = read_dicom(path, ("PatientID", "ViewPosition"))
    assert out.pixels.dtype == np.uint8 and out.pixels.shape == (64, 64)
    assert np.abs(out.pixels.astype(int) - arr).mean() < 3  # lossy, but close
    assert out.meta["PatientID"] == "abc" and out.meta["ViewPosition"] == "AP"


def test_monochrome1_is_inverted(tmp_path):
    arr = _gradient(np.uint8, 255)
    p1 = _save(native_dataset(arr, "MONOCHROME1"), tmp_path / "m1.dcm")
    p2 = _save(native_dataset(arr, "MONOCHROME2"), tmp_path / "m2.dcm")
    a, b = read_dicom(p1), read_dicom(p2)
    assert np.array_equal(a.pixels, 255 - b.pixels)
    assert "MONOCHROME1 inverted" in a.notes


def test_rescale_and_window(tmp_path):
    raw = np.array([[0, 1000], [2000, 3000]], np.uint16)
    ds = native_dataset(raw)
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 500, 1001  # HU 0..1000 -> full range
    out = read_dicom(_save(ds, tmp_path / "ct.dcm"))
    # HU: -1024, -24, 976, 1976 -> below window, below, near the top, above
    assert out.pixels[0, 0] == 0 and out.pixels[0, 1] == 0 and out.pixels[1, 1] == 255
    assert 240 < out.pixels[1, 0] < 255
    assert "VOI LUT/window applied" in out.notes


def test_voi_lut_sequence(tmp_path):
    raw = np.array([[0, 1], [2, 3]], np.uint16)
    ds = native_dataset(raw)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.add_new(0x00283006, "US", [0, 50, 100, 255])  # LUTData
    ds.VOILUTSequence = [item]
    out = read_dicom(_save(ds, tmp_path / "voi.dcm"))
    assert out.pixels.tolist() == [[0, 50], [100, 255]]


def test_signed_16bit(tmp_path):
    arr = np.array([[-1000, 0], [500, 1000]], np.int16)
    out = read_dicom(_save(native_dataset(arr), tmp_path / "s.dcm"))
    assert out.pixels.tolist() == [[0, 128], [191, 255]]


def test_rgb_and_ybr(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 2] = 50
    out = read_dicom(_save(native_dataset(rgb, "RGB"), tmp_path / "rgb.dcm"))
    assert out.pixels.shape == (8, 8, 3) and out.pixels[0, 0].tolist() == [200, 0, 50]
    # YBR_FULL: pydicom converts to RGB
    from pydicom.pixels import convert_color_space

    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    out = read_dicom(_save(native_dataset(ybr, "YBR_FULL"), tmp_path / "ybr.dcm"))
    assert np.abs(out.pixels.astype(int) - rgb).max() <= 2


def test_multiframe_first_frame(tmp_path):
    frames = np.stack([np.full((6, 6), v, np.uint8) for v in (10, 200, 30)])
    ds = native_dataset(frames[0])
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    out = read_dicom(_save(ds, tmp_path / "mf.dcm"))
    assert (out.pixels == 10).all() and out.meta["frames"] == 3
    assert any("first frame" in n for n in out.notes)


def test_jpeg_baseline_multiframe_encapsulated(tmp_path):
    import io

    from PIL import Image

    arr = _gradient(np.uint8, 255, (32, 32))
    ds = rsna_dataset(arr, "p", 40, "M", "PA", 0.168)
    frames = []
    for v in (arr, 255 - arr):
        b = io.BytesIO()
        Image.fromarray(v).save(b, format="JPEG", quality=95)
        frames.append(b.getvalue())
    ds.NumberOfFrames = 2
    ds.PixelData = encapsulate(frames)
    out = read_dicom(_save(ds, tmp_path / "mf.dcm"))
    assert np.abs(out.pixels.astype(int) - arr).mean() < 3


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "notdicom.dcm"
    bad.write_bytes(b"hello")
    with pytest.raises(DicomError, match="notdicom.dcm"):
        read_dicom(bad)
    ds = native_dataset(np.zeros((4, 4), np.uint8))
    del ds.PixelData
    with pytest.raises(DicomError, match="no PixelData"):
        read_dicom(_save(ds, tmp_path / "nopix.dcm"))
    # truncated JPEG stream
    arr = _gradient(np.uint8, 255, (32, 32))
    ds = rsna_dataset(arr, "t", 40, "M", "PA", 0.168)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0garbage"])
    with pytest.raises(DicomError, match="cannot decode pixel data"):
        read_dicom(_save(ds, tmp_path / "trunc.dcm"))


# Files from other toolkits (DCMTK, GDCM, ...) that ship with pydicom: real encoders' output.
def _testdata(name):
    from pydicom.data import get_testdata_file

    return get_testdata_file(name, download=False)


def test_same_image_in_five_transfer_syntaxes():
    ref = read_dicom(_testdata("MR_small.dcm")).pixels
    for name in ("MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                 "MR_small_jpeg_ls_lossless.dcm", "MR_small_implicit.dcm"):
        out = read_dicom(_testdata(name))
        assert np.array_equal(out.pixels, ref), name


def test_jpeg_lossless_and_extended_from_other_encoders():
    rgb = read_dicom(_testdata("SC_rgb_jpeg_gdcm.dcm"))  # JPEG Lossless, process 14 SV1 (GDCM)
    ref = read_dicom(_testdata("SC_rgb_rle.dcm")).pixels  # the same image, RLE (DCMTK)
    assert rgb.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.70" and np.array_equal(rgb.pixels, ref)
    ext = read_dicom(_testdata("JPGExtended.dcm"))  # JPEG Extended, 12-bit
    assert ext.meta["bits_stored"] == 12 and ext.pixels.shape == (1024, 256) and ext.pixels.std() > 10


def test_undecodable_real_file_names_the_cause():
    with pytest.raises(DicomError, match=r"JPEG-lossy.dcm: cannot decode pixel data with transfer syntax"):
        read_dicom(_testdata("JPEG-lossy.dcm"))


def test_jpeg_baseline_decodes_the_same_with_or_without_the_gpl_decoder(tmp_path):
    """JPEG Baseline goes to Pillow wherever it can, so a lossy image's pixels do not depend on whether
    pylibjpeg-libjpeg (the optional jpeg-lossless extra, which pydicom would try first) is installed:
    the two decoders differ on some pixels of the same file."""
    import io

    from PIL import Image
    from pydicom.encaps import generate_frames
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGBaseline8Bit

    from medrepro.synth.phantoms import chest_radiograph

    img = chest_radiograph(np.random.default_rng(0), 256, 256, "lobar", 0.0).image
    path = _save(rsna_dataset(img, "p", 40, "M", "PA", 0.143), tmp_path / "p.dcm")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    pillow = np.asarray(Image.open(io.BytesIO(next(generate_frames(ds.PixelData, number_of_frames=1)))))
    assert np.array_equal(read_dicom(path).pixels, pillow)
    if "pylibjpeg" in get_decoder(JPEGBaseline8Bit).available_plugins:  # the test extras install it
        ds.pixel_array_options(decoding_plugin="pylibjpeg")
        libjpeg = ds.pixel_array
        assert not np.array_equal(libjpeg, pillow) and np.abs(libjpeg.astype(int) - pillow).max() <= 2
