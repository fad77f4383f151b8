"""Leakage inflation, measured: what splitting by image instead of by patient adds to a score.

Config ``inflation`` pairs runs (:func:`medrepro.config.with_inflation`): each listed classifier
experiment, or study at one named configuration, is trained twice on the two arms of
:func:`medrepro.splits.paired_split`, one image-level split with and without the test patients'
other images in train and val, on the same test images and with training sets of the same size.
The inflation of a metric is the image arm's value minus the patient arm's, with a paired
bootstrap interval over the test patients (:func:`medrepro.uncertainty.paired_difference`).
Badža & Barjaktarović (2020, doi:10.3390/app10061999) report such a gap on the
brain-tumour set: 96.6 % accuracy split by slice against 88.5 % by patient.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .metrics import paper_scores
from .uncertainty import paired_difference

# metric label -> path in medrepro.metrics.paper_scores (macro recall is the balanced accuracy)
METRICS = {"accuracy": "accuracy", "balanced accuracy": "recall", "macro F1": "f1"}


def reading(low: float, high: float) -> str:
    """What the interval of an inflation says."""
    if low > 0:
        return "inflated (interval above 0)"
    if high < 0:
        return "deflated (interval below 0)"
    return "no difference shown (interval includes 0)"


def test_rows(predictions, split) -> pd.DataFrame:
    """The test predictions of one arm with each image's patient id (from its split table)."""
    pred = pd.read_csv(predictions)
    pred = pred[pred["split"] == "test"]
    ids = pd.read_csv(split, usecols=["image_id", "patient_id"], dtype={"patient_id": str})
    return pred.merge(ids, on="image_id", how="left")


def inflation_rows(name: str, paper: str, dataset: str, model: str, classes: list[str], arms: dict,
                   bootstrap: dict) -> list[dict]:
    """One row per metric of :data:`METRICS` for the pair ``name`` (``model``: what was trained, in
    words); ``arms``: ``{"image": {...}, "patient": {...}}`` with each arm's ``predictions``,
    ``split`` and ``audit`` files."""
    rows = {arm: test_rows(f["predictions"], f["split"]) for arm, f in arms.items()}
    audit = json.loads(Path(arms["image"]["audit"]).read_text())
    res = paired_difference(rows["image"], rows["patient"], lambda r: paper_scores(r, classes), list(METRICS.values()),
                            group="patient_id", n_resamples=bootstrap["n_resamples"], seed=bootstrap["seed"],
                            confidence=bootstrap["confidence"])
    out = []
    for label, path in METRICS.items():
        m = res["metrics"][path]
        low, high = m["ci"]
        out.append({"paper": paper, "run": name, "model": model, "dataset": dataset, "metric": label,
                    "split by image": round(m["a"], 4), "split by patient": round(m["b"], 4),
                    "inflation": round(m["difference"], 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
                    "reading": reading(low, high),
                    "test images": audit["test_images"], "test patients": audit["test_patients"],
                    "test patients seen in training": audit["test_patients_seen_in_training"],
                    "train images": sum(audit["counts"].get("train", {}).values()),
                    "interval": f"{res['n_resamples']} paired resamples of {res['units']} "
                                f"{'patients' if res['unit'] == 'patient_id' else 'images'}"
                                + (" (few: rough)" if "warning" in res else "")})
    return out


def write_inflation(pairs: dict, out_dir, bootstrap: dict, scale: str = "demo") -> pd.DataFrame:
    """Every pair's rows (:func:`inflation_rows`; ``pairs``: name -> its keyword arguments) as
    ``inflation`` (CSV, Markdown, LaTeX) and one table per paper, ``<paper>``, in ``out_dir``."""
    from .io import atomic_dir, write_json
    from .provenance import record, short
    from .tables import scale_note, write_table

    table = pd.DataFrame([r for name, kw in pairs.items() for r in inflation_rows(name, bootstrap=bootstrap, **kw)])
    prov = record({"bootstrap": bootstrap})
    caption = ("leakage inflation: the same model, seed and budget trained on one image-level split with and without "
               "the test patients' other images; inflation = by image - by patient on the same test images, with a "
               "paired bootstrap interval over the test patients")
    with atomic_dir(out_dir) as tmp:
        write_table(table, tmp / "inflation", caption=caption, note=scale_note(scale), provenance=short(prov))
        for paper, part in (table.groupby("paper", sort=False) if len(table) else []):
            write_table(part.drop(columns="paper"), tmp / paper, caption=f"{paper}: {caption}",
                        note=scale_note(scale), provenance=short(prov))
        write_json(tmp / "provenance.json", prov)
    return table
