"""The five datasets: each module has ``synthesize(root, seed, ...)`` and ``ingest(root, threads)``.

=============== ============================================ =====================================
name            dataset                                      on disk
=============== ============================================ =====================================
``rsna``        RSNA Pneumonia Detection Challenge           JPEG-Baseline DICOM + CSVs
``kermany``     Kermany pediatric chest X-ray (Kaggle)       JPEG tree
``covid``       COVID-19 Radiography Database                PNG tree + xlsx
``brain_tumor`` figshare brain tumour (Cheng)                MATLAB v7.3 (HDF5) in zips
``rfmid``       Retinal Fundus Multi-disease Image Dataset   PNG + CSV
=============== ============================================ =====================================
"""
from __future__ import annotations

from types import ModuleType

from . import brain_tumor, covid, kermany, rfmid, rsna
from .base import MANIFEST_COLUMNS, REJECTED_COLUMNS, DatasetLayoutError, IngestResult

DATASETS: dict[str, ModuleType] = {m.NAME: m for m in (rsna, kermany, covid, brain_tumor, rfmid)}


def get(name: str) -> ModuleType:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


__all__ = ["DATASETS", "get", "IngestResult", "DatasetLayoutError", "MANIFEST_COLUMNS", "REJECTED_COLUMNS"]
