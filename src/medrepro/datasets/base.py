"""What every dataset reader returns: a manifest and a list of rejections.

A manifest has one row per image and the columns :data:`MANIFEST_COLUMNS`:

``image_id``  unique within the dataset
``path``      where the image is; ``archive.zip::member`` for a zip member
``label``     the primary class as the dataset names it ('' when unlabelled)
``labels``    ';'-joined multi-labels (RFMiD), else ''
``patient_id`` the grouping key for splits; the image id where a dataset has none
``source_split`` the split the distributor put the image in ('' when none)
``boxes``     JSON list of [x, y, w, h] in original pixels (RSNA), else '[]'
``mask_path`` a mask image or ``zip::member`` holding one, else ''
``meta``      JSON object of per-image metadata (header fields, sizes, notes)

Rejections name the file, the row (1-based data row, '' for a file) and the
field, and say what was expected; ingest goes on without the rejected item.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

MANIFEST_COLUMNS = [
    "image_id", "path", "label", "labels", "patient_id", "source_split", "boxes", "mask_path", "meta",
]
REJECTED_COLUMNS = ["file", "row", "field", "reason"]


class DatasetLayoutError(FileNotFoundError):
    """The raw folder does not look like the dataset at all (nothing to ingest)."""


@dataclass
class IngestResult:
    records: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def add(self, image_id, path, label="", patient_id=None, source_split="", labels=(), boxes=(),
            mask_path="", **meta) -> None:
        self.records.append({
            "image_id": str(image_id),
            "path": str(path),
            "label": str(label),
            "labels": ";".join(labels),
            "patient_id": str(patient_id if patient_id is not None else image_id),
            "source_split": source_split,
            "boxes": json.dumps([[round(float(v), 3) for v in b] for b in boxes]),
            "mask_path": str(mask_path),
            "meta": json.dumps(meta, sort_keys=True, default=str),
        })

    def reject(self, file, reason: str, row="", field="") -> None:
        self.rejected.append({"file": str(file), "row": row, "field": field, "reason": reason})

    @property
    def manifest(self) -> pd.DataFrame:
        df = pd.DataFrame(self.records, columns=MANIFEST_COLUMNS)
        dup = df["image_id"].duplicated(keep=False)
        if dup.any():
            raise ValueError(f"duplicate image ids in manifest: {sorted(df.loc[dup, 'image_id'].unique())[:10]}")
        return df.sort_values("image_id", kind="stable").reset_index(drop=True)

    @property
    def rejections(self) -> pd.DataFrame:
        return pd.DataFrame(self.rejected, columns=REJECTED_COLUMNS)


SYSTEM_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def is_system_file(path: Path) -> bool:
    return path.name in SYSTEM_FILES or path.name.startswith("._") or "__MACOSX" in path.parts


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(f"{path}: expected {what}, but there is no such folder")
    return path


class CsvDialectError(ValueError):
    """A labels CSV in a form the reader will not guess at (another delimiter)."""


def labels_csv_rows(path: str | Path) -> list[list[str]]:
    """The rows (header first) of a labels CSV as real copies come: a UTF-8 byte-order mark is
    dropped and CRLF line ends read as LF; a file re-saved by a spreadsheet with ';' (or tab)
    between fields raises :class:`CsvDialectError` naming the delimiter, rather than being
    read as one column."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        first = fh.readline()
        fh.seek(0)
        if first.startswith("\ufeff"):  # a second mark (saved twice)
            first = first[1:]
        for delim, name in ((";", "semicolons"), ("\t", "tabs")):
            if delim in first and "," not in first:
                raise CsvDialectError(f"{path}: the header {first.strip()!r} separates fields with {name} "
                                      f"({delim!r}); expected commas (the distributed file). It looks re-saved by a "
                                      "spreadsheet: restore the original file, or save it again as comma-separated")
        return list(csv.reader(fh))


def plant_duplicates(root: str | Path, groups: dict, rng, exact: int = 0, near: int = 0) -> list[dict]:
    """Overwrite a few synthetic images with copies of others, for the leakage audit to find.

    ``groups`` maps a key (a class) to its image files; each planted copy takes a source and a
    destination from one group (so the copy keeps its label), cycling through the groups.
    ``exact`` copies are byte-identical; ``near`` copies are the source decoded, brightened by
    6 grey levels and encoded again in the destination's format (a re-saved picture).
    Returns ``{kind, src, dst}`` per copy, paths relative to ``root``.
    """
    import numpy as np
    from PIL import Image

    root = Path(root)
    keys = [k for k in groups if len(groups[k]) >= 2]
    planted: list[dict] = []
    used: set = set()
    for n, kind in enumerate(["identical"] * exact + ["near-duplicate"] * near):
        if not keys:
            break
        files = [f for f in groups[keys[n % len(keys)]] if f not in used]
        if len(files) < 2:
            continue
        i, j = rng.choice(len(files), size=2, replace=False)
        src, dst = Path(files[i]), Path(files[j])
        used |= {files[i], files[j]}
        if kind == "identical":
            dst.write_bytes(src.read_bytes())
        else:
            with Image.open(src) as im:
                arr = np.asarray(im).astype(np.int16)
                fmt = im.format
            out = Image.fromarray(np.clip(arr + 6, 0, 255).astype(np.uint8))
            out.save(dst, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        planted.append({"kind": kind, "src": src.relative_to(root).as_posix(), "dst": dst.relative_to(root).as_posix()})
    return planted
