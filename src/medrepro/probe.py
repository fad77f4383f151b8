"""A source probe: can an image's collection be told from what lies outside the lungs?

The COVID-19 Radiography Database gathers its classes from different collections (its metadata
sheets give each image's URL): Normal is mostly RSNA's adults and partly Kermany's children,
Viral Pneumonia is all Kermany's children, COVID comes from other hospitals.  A classifier can then
score well by recognising the collection, its age group, equipment and markers, rather than the
disease (DeGrave et al. 2021, doi:10.1038/s42256-021-00338-7; Roberts et al. 2021,
doi:10.1038/s42256-021-00307-0).

Two measurements, on the converted images and their lung masks:

- :func:`class_source_table`: the classes by collection, from the metadata alone, and the accuracy
  of guessing an image's class from its collection (how much of the task the source decides);
- :func:`probe`: a logistic regression (scikit-learn) on the image with the lungs (dilated) masked
  out, shrunk to ``size`` x ``size``, predicting the collection; cross-validated predictions, their
  accuracy with Clopper-Pearson's interval against the majority rate.  Over all images, and within
  each class that has images of several collections, where the class cannot explain the answer.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage, stats

from .io import read_csv

UNKNOWN = "(no URL)"


def collection(meta: str) -> str:
    """The collection of an image: the ``url`` of its metadata row (the manifest's ``meta`` JSON)."""
    try:
        url = json.loads(meta or "{}").get("url", "")
    except json.JSONDecodeError:
        url = ""
    return url.strip() or UNKNOWN


def short_names(urls) -> dict[str, str]:
    """URL -> a short name for tables: its last path segment other than ``data``
    (``rsna-pneumonia-detection-challenge``), or the whole URL where two would share one."""
    def short(url):
        parts = [p for p in url.split("?")[0].split("/") if p and p != "data" and ":" not in p]
        return parts[-1] if parts else url
    names = {u: short(u) for u in set(urls)}
    clash = {n for n in names.values() if list(names.values()).count(n) > 1}
    return {u: (u if n in clash else n) for u, n in names.items()}


def masked(image: np.ndarray, lung_mask: np.ndarray, dilate: int) -> np.ndarray:
    """``image`` with the lungs, grown by ``dilate`` pixels, set to 0: what the probe may look at."""
    lungs = ndimage.binary_dilation(lung_mask, iterations=dilate) if dilate else lung_mask
    out = image.copy()
    out[lungs] = 0
    return out


def features(rows: pd.DataFrame, size: int = 32, dilate: int = 3, progress: bool = True
             ) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """One row per image: its masked pixels (:func:`masked`) at ``size`` x ``size``, in [0, 1];
    and the images that could not be read, with the file and the reason (their rows are NaN)."""
    from tqdm import tqdm

    out = np.full((len(rows), size * size), np.nan, np.float32)
    unreadable = []
    for i, (png, mask_png) in enumerate(tqdm(list(zip(rows["png"], rows["mask_png"])), disable=not progress,
                                             desc="source probe: masked images", unit="img")):
        try:
            with Image.open(png) as im:
                img = np.asarray(im.convert("L"))
            with Image.open(mask_png) as mk:
                lungs = np.asarray(mk.convert("L").resize(img.shape[::-1], Image.NEAREST)) > 127
        except (OSError, ValueError) as exc:   # one bad file is reported and left out, not the whole probe
            unreadable.append((f"{png} (mask {mask_png})", str(exc)))
            continue
        small = Image.fromarray(masked(img, lungs, dilate)).resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(small, np.float32).ravel() / 255.0
    return out, unreadable


def probe(x: np.ndarray, sources: pd.Series, folds: int = 5, seed: int = 0, confidence: float = 0.95) -> dict:
    """Cross-validated accuracy of a logistic regression predicting ``sources`` from ``x``, with
    Clopper-Pearson's interval, beside the majority rate; ``"reading"`` says whether the
    interval lies above it.  Folds are stratified and at most the smallest collection's size."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = sources.to_numpy()
    counts = pd.Series(y).value_counts()
    n, k = len(y), int(min(folds, counts.min()))
    majority = float(counts.iloc[0] / n)
    out = {"images": n, "collections": int(len(counts)), "majority_rate": majority,
           "majority_collection": str(counts.index[0]), "folds": k}
    if len(counts) < 2 or k < 2:
        return {**out, "accuracy": None, "ci_low": None, "ci_high": None,
                "reading": "not measurable (one collection, or a collection of one image)"}
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
    pred = cross_val_predict(model, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed))
    hits = int((pred == y).sum())
    ci = stats.binomtest(hits, n).proportion_ci(confidence_level=confidence, method="exact")
    reading = ("source identifiable (interval above the majority rate)" if ci.low > majority
               else "not shown (interval reaches the majority rate)")
    return {**out, "accuracy": hits / n, "ci_low": float(ci.low), "ci_high": float(ci.high), "reading": reading}


def class_source_table(rows: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Images per class (rows) and collection (columns), and the accuracy of guessing each image's
    class as its collection's most frequent one (1.0: the collection alone names the class)."""
    table = pd.crosstab(rows["label"], rows["collection"])
    return table, float(table.max(axis=0).sum() / table.to_numpy().sum())


def source_probe(converted_manifest, size: int = 32, dilate: int = 3, folds: int = 5, seed: int = 0,
                 confidence: float = 0.95, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """The probe of one dataset: its rows (all images; then each class with several collections),
    the class-by-collection table and the class-from-collection accuracy (collections by their
    :func:`short_names`; ``summary.json`` of :func:`write_probe` keeps the URLs)."""
    df = read_csv(converted_manifest)
    missing = df["mask_png"].fillna("").astype(str).str.len().eq(0)
    if missing.all():
        raise ValueError(f"{converted_manifest}: no image has a lung mask (mask_png): the source probe needs them")
    urls = df.loc[~missing, "meta"].fillna("").map(collection)
    rows = df.loc[~missing].assign(collection=urls.map(short_names(urls))).reset_index(drop=True)
    x, unreadable = features(rows, size, dilate, progress)
    for f, why in unreadable:
        print(f"source probe: {f} left out: {why}", file=sys.stderr)
    read = ~np.isnan(x).any(axis=1)
    rows, x = rows.loc[read].reset_index(drop=True), x[read]
    out = [{"images of": "all classes", **probe(x, rows["collection"], folds, seed, confidence)}]
    for label, part in rows.groupby("label", sort=True):
        if part["collection"].nunique() > 1:
            out.append({"images of": f"class {label}",
                        **probe(x[part.index.to_numpy()], part["collection"], folds, seed, confidence)})
    table, from_source = class_source_table(rows)
    result = pd.DataFrame(out)
    result.insert(1, "without lung mask", int(missing.sum()))
    result.insert(2, "unreadable", len(unreadable))
    return result, table, from_source


def write_probe(converted_manifest, out_dir, dataset: str, *, size: int = 32, dilate: int = 3, folds: int = 5,
                seed: int = 0, confidence: float = 0.95, scale: str = "demo") -> pd.DataFrame:
    """:func:`source_probe` as ``probe`` and ``classes_by_source`` (CSV, Markdown, LaTeX) and
    ``summary.json`` in ``out_dir``."""
    from .io import atomic_dir, write_json
    from .provenance import record, short
    from .tables import scale_note, write_table

    result, table, from_source = source_probe(converted_manifest, size, dilate, folds, seed, confidence)
    prov = record({"dataset": dataset, "size": size, "dilate": dilate, "folds": folds, "seed": seed})
    shown = result.assign(**{c: result[c].round(3) for c in ("accuracy", "ci_low", "ci_high", "majority_rate")})
    with atomic_dir(out_dir) as tmp:
        write_table(shown, tmp / "probe", caption=f"{dataset}: the image's collection (metadata URL) predicted from "
                    f"the image with the lungs masked out (grown by {dilate} px, {size}x{size} px, logistic "
                    f"regression, {folds}-fold cross-validated), accuracy with Clopper-Pearson's interval",
                    note=scale_note(scale), provenance=short(prov))
        write_table(table.reset_index().rename(columns={"label": "class"}), tmp / "classes_by_source",
                    caption=f"{dataset}: images per class and collection; guessing the class from the collection "
                    f"alone is right for {from_source:.1%} of the images", note=scale_note(scale),
                    provenance=short(prov))
        urls = read_csv(converted_manifest)["meta"].fillna("").map(collection)
        write_json(tmp / "summary.json", {"dataset": dataset, "class_from_collection_accuracy": from_source,
                                          "collections": {v: k for k, v in short_names(urls).items()},
                                          "rows": json.loads(result.to_json(orient="records")),
                                          "provenance": prov})
    return result
