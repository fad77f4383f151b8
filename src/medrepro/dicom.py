"""DICOM decoding to one image contract, and writing of RSNA-like DICOMs.

:func:`read_dicom` decodes any transfer syntax that pydicom can decode with the
installed plugins (native little/big endian, deflated, RLE, JPEG baseline and
8-bit extended via Pillow, JPEG 2000 via pylibjpeg-openjpeg, JPEG-LS via pyjpegls;
JPEG lossless and 12-bit extended via pylibjpeg-libjpeg, GPL-3.0, installed by the
optional ``jpeg-lossless`` extra: :func:`decoder_hint` says so when a file needs it)
and returns a display-ready image:

1. the first frame of a multi-frame object (``notes`` says so);
2. the modality LUT (RescaleSlope/Intercept) and then the VOI LUT or window
   (pydicom's :func:`~pydicom.pixels.apply_voi_lut`) when the file has one;
3. MONOCHROME1 inverted so that high values are bright, as in MONOCHROME2;
4. colour (RGB or YBR_*) converted to RGB by pydicom;
5. scaled to uint8: 8-bit data without a window is kept as is, everything
   else maps its window (or its min..max when there is none) onto 0..255.
"""
from __future__ import annotations

import importlib.util
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

RSNA_UID_PREFIX = "1.2.276.0.7230010.3."


class DicomError(ValueError):
    """A DICOM file that cannot be decoded into an image."""


@dataclass
class DecodedImage:
    pixels: np.ndarray  # uint8, (H, W) or (H, W, 3)
    meta: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _scale_to_uint8(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    out = (arr.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


NO_META_NOTE = "no DICOM file meta header (no 'DICM' preamble): read with force=True, transfer syntax inferred"


def dcmread(path: str | Path, **kwargs) -> tuple[pydicom.Dataset, list[str]]:
    """``pydicom.dcmread`` that also takes the files real archives contain: a dataset written
    without its file meta header is read with ``force=True`` and its transfer syntax set from the
    encoding pydicom found (returned notes say so); header values that break the standard
    (over-long decimal strings, say) only warn, as pydicom's default validation does."""
    try:
        return pydicom.dcmread(path, **kwargs), []
    except pydicom.errors.InvalidDicomError:
        ds = pydicom.dcmread(path, force=True, **kwargs)
    if len(ds) == 0:
        raise pydicom.errors.InvalidDicomError("neither a DICOM file nor a raw DICOM dataset")
    if "TransferSyntaxUID" not in ds.file_meta:
        from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds, [NO_META_NOTE]


# the transfer syntaxes only pylibjpeg-libjpeg (GPL-3.0, the jpeg-lossless extra) or GDCM decode
LIBJPEG_SYNTAXES = {"1.2.840.10008.1.2.4.57": "JPEG Lossless", "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
                    "1.2.840.10008.1.2.4.51": "JPEG Extended (12-bit)"}


def decoder_hint(tsuid, bits_stored: int = 8) -> str:
    """What to install when no plugin here decodes ``tsuid`` at ``bits_stored`` ('' when one does;
    Pillow decodes 8-bit JPEG Extended, not 12-bit)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    try:
        decoder = get_decoder(UID(str(tsuid)))
    except NotImplementedError:
        return f"pydicom has no decoder for transfer syntax {tsuid}"
    if decoder.is_available and str(tsuid) not in LIBJPEG_SYNTAXES:
        return ""
    needs_libjpeg = str(tsuid) in LIBJPEG_SYNTAXES and (bits_stored > 8 or not str(tsuid).endswith(".51"))
    if needs_libjpeg and importlib.util.find_spec("libjpeg") is None:
        return (f"{LIBJPEG_SYNTAXES[str(tsuid)]} needs pylibjpeg-libjpeg (GPL-3.0, not installed by default): "
                "pip install -e \".[jpeg-lossless]\"")
    if not decoder.is_available:
        return "no installed plugin decodes it (" + "; ".join(decoder.missing_dependencies) + ")"
    return ""


def read_dicom(path: str | Path, header_fields: tuple[str, ...] = ()) -> DecodedImage:
    """Decode ``path`` into a :class:`DecodedImage` (see the module docstring).

    ``header_fields`` are copied into ``meta`` (as strings) when present.
    Raises :class:`DicomError` naming the file and the cause when the file is not
    DICOM, has no pixel data or uses a transfer syntax no installed plugin decodes.
    """
    path = Path(path)
    try:
        ds, notes = dcmread(path)
    except Exception as exc:  # pydicom raises several types for bad files
        raise DicomError(f"{path}: not a readable DICOM file ({exc})") from exc
    arr = _pixels(path, ds, notes)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    meta = {
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 8))),
        "photometric": photometric,
        "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "unknown")),
        "frames": int(ds.get("NumberOfFrames", 1) or 1),
    }
    for name in header_fields:
        if name in ds:
            meta[name] = str(ds.data_element(name).value)
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        # pydicom converts YBR_FULL(_422) to RGB by default; JPEG decoders do so for YBR in JPEG
        if arr.dtype != np.uint8:
            arr = _scale_to_uint8(arr, float(arr.min()), float(arr.max()))
        return DecodedImage(np.ascontiguousarray(arr), meta, notes)
    out = _grey_to_uint8(ds, arr, meta["bits_stored"], notes)
    if photometric == "MONOCHROME1":
        out = 255 - out
        notes.append("MONOCHROME1 inverted")
    return DecodedImage(np.ascontiguousarray(out), meta, notes)


# Lossy JPEG decoders round their inverse DCT differently: pylibjpeg-libjpeg (the optional GPL
# extra, which pydicom tries first) and Pillow's libjpeg-turbo differ by one grey level on about 3 %
# of an RSNA-like image's pixels, enough to move a model trained on them. Pillow, a dependency of
# every install, decodes JPEG Baseline and Extended wherever it can (8 bits), so an image's pixels
# do not depend on whether the extra is installed; what Pillow cannot decode (12-bit Extended)
# goes to pydicom's own choice. Every other syntax has one decoder here, or is lossless.
PREFERRED_PLUGIN = {"1.2.840.10008.1.2.4.50": "pillow", "1.2.840.10008.1.2.4.51": "pillow"}


def _pixels(path: Path, ds, notes: list[str]) -> np.ndarray:
    """The decoded pixels of ``ds`` (the first frame of a multi-frame file, noted), by
    :data:`PREFERRED_PLUGIN` where it names one for the file's transfer syntax and can decode it."""
    if "PixelData" not in ds:
        raise DicomError(f"{path}: DICOM file has no PixelData element")
    tsuid = ds.file_meta.get("TransferSyntaxUID", "unknown")
    arr = _preferred_decode(ds, str(tsuid))
    try:
        if arr is None:
            arr = ds.pixel_array
    except Exception as exc:
        hint = decoder_hint(tsuid, int(ds.get("BitsStored", 8) or 8))
        raise DicomError(
            f"{path}: cannot decode pixel data with transfer syntax {tsuid} "
            f"({getattr(tsuid, 'name', tsuid)}): {exc}" + (f". {hint}" if hint else "")
        ) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
        notes.append(f"multi-frame ({frames} frames): first frame used")
    return arr


def _preferred_decode(ds, tsuid: str) -> np.ndarray | None:
    """The pixels as :data:`PREFERRED_PLUGIN`'s plugin decodes them, or None where it names none for
    ``tsuid``, is not installed or cannot decode this file (then pydicom chooses, from its default)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    plugin = PREFERRED_PLUGIN.get(tsuid)
    if plugin is None or plugin not in get_decoder(UID(tsuid)).available_plugins:
        return None
    try:
        ds.pixel_array_options(decoding_plugin=plugin)
        return ds.pixel_array
    except Exception:  # e.g. Pillow and 12-bit JPEG Extended: pydicom's default order decides
        return None
    finally:
        ds.pixel_array_options(decoding_plugin="")


def _grey_to_uint8(ds, arr: np.ndarray, bits_stored: int, notes: list[str]) -> np.ndarray:
    """A greyscale image's 8-bit display values: the modality LUT (rescale), then the VOI LUT or
    window where the file has one, else the full range of the values (8-bit pixels as they are)."""
    has_rescale = "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds
    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    values = apply_modality_lut(arr, ds) if has_rescale else arr
    if has_voi:
        values = apply_voi_lut(values, ds, index=0)
        if "VOILUTSequence" in ds:
            lut_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            lo, hi = 0.0, float(2**lut_bits - 1)
        else:
            lo, hi = _window_range(ds)
        notes.append("VOI LUT/window applied")
        return _scale_to_uint8(values, lo, hi)
    if bits_stored <= 8 and not has_rescale and arr.dtype == np.uint8:
        return arr.astype(np.uint8, copy=False)
    return _scale_to_uint8(values, float(np.min(values)), float(np.max(values)))


def _window_range(ds) -> tuple[float, float]:
    """The output range of pydicom's windowing for ``ds`` (PS3.3 C.11.2.1.2).

    pydicom maps the window onto [y_min, y_max]: the stored range of the pixel
    representation (or of a modality LUT), rescaled when a rescale is present.
    """
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        lo, hi = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
        slope, icpt = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = sorted((lo * slope + icpt, hi * slope + icpt))
    return lo, hi


def rsna_dataset(
    pixels: np.ndarray,
    patient_id: str,
    age: int,
    sex: str,
    view: str,
    pixel_spacing: float,
    jpeg_quality: int = 90,
    uid_rng: np.random.Generator | None = None,
) -> FileDataset:
    """Build a DICOM like the RSNA Pneumonia Challenge files, JPEG Baseline encoded.

    Tags as in the challenge's files: Secondary Capture, 8-bit MONOCHROME2,
    Modality CR, ConversionType WSD, PatientName = PatientID = ``patient_id``,
    PatientAge without a unit, ViewPosition and SeriesDescription ``view: XX``.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError("RSNA-like DICOMs hold 8-bit single-channel pixels")
    rng = uid_rng or np.random.default_rng(abs(hash(patient_id)) % 2**32)

    def uid() -> str:
        return RSNA_UID_PREFIX + ".".join(str(int(x)) for x in rng.integers(1, 2**31, 4))

    sop_uid = uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.ImplementationClassUID = RSNA_UID_PREFIX + "0.3.6.0"
    meta.ImplementationVersionName = "OFFIS_DCMTK_360"
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "19010101"
    ds.StudyTime = "000000.00"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"view: {view}"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = sex
    with warnings.catch_warnings():  # RSNA writes the age without the AS unit, e.g. '51'
        warnings.simplefilter("ignore")
        ds.PatientAge = str(age)
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.StudyInstanceUID = uid()
    ds.SeriesInstanceUID = uid()
    ds.StudyID = ""
    ds.SeriesNumber = "1"
    ds.InstanceNumber = "1"
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [f"{pixel_spacing:.3f}", f"{pixel_spacing:.3f}"]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=jpeg_quality)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def native_dataset(pixels: np.ndarray, photometric: str = "MONOCHROME2") -> FileDataset:
    """A minimal uncompressed Secondary Capture dataset holding ``pixels``.

    Useful to write test files in other transfer syntaxes with
    :meth:`pydicom.dataset.Dataset.compress` or by changing the file meta.
    ``pixels`` is uint8/uint16/int16 (H, W) or uint8 (H, W, 3) for RGB.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.PatientID = "TEST"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    return ds
