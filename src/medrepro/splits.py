"""Seeded, stratified, patient-grouped splits with an overlap audit.

An experiment's split is described in config:

``sources``      the source splits used at all (default: every one)
``keep_source``  source splits kept as the distributor made them (e.g. ``[test]``)
``counts``       images per class drawn first into named splits, whole patients at a time
                 (e.g. ``{test: {normal: 203, pneumonia: 313}}``: a paper's test composition)
``fractions``    how the remaining images are re-split, e.g. ``{train: 0.8, val: 0.2}``
                 (a single split takes them all)
``seed``         the shuffle seed
``group_by``     the column that must not straddle splits (``patient_id``)
``overlap``      what to do when a group straddles splits anyway (only possible
                 with ``keep_source``, whose splits come from the distributor):
                 ``error`` stops with the list of groups, ``drop`` removes their
                 images from the non-kept splits, ``report`` keeps them and records
                 them in the audit.

The re-split uses scikit-learn's :class:`~sklearn.model_selection.StratifiedGroupKFold`:
the fractions are expressed as whole numbers of folds (0.7/0.15/0.15 -> 14/3/3 of
20 folds) so that classes stay balanced across splits and no group is cut.
"""
from __future__ import annotations

import warnings
from fractions import Fraction
from math import lcm

import numpy as np
import pandas as pd


class SplitLeakageError(ValueError):
    """A patient (group) appears in more than one split."""


def fold_counts(fractions: dict[str, float], max_folds: int = 20) -> tuple[int, dict[str, int]]:
    """Express split fractions as whole folds: ``({train: .8, val: .2})`` -> ``(5, {train: 4, val: 1})``."""
    total = sum(fractions.values())
    if not np.isclose(total, 1.0, atol=1e-6):
        raise ValueError(f"split fractions must sum to 1, got {fractions} (sum {total:.4f})")
    if any(v <= 0 for v in fractions.values()):
        raise ValueError(f"split fractions must be positive, got {fractions}")
    fr = {k: Fraction(v).limit_denominator(max_folds) for k, v in fractions.items()}
    off = {k: v for k, v in fractions.items() if not np.isclose(float(fr[k]), v, atol=1e-9)}
    n = lcm(*(f.denominator for f in fr.values()))
    if off or n > max_folds or sum(fr.values()) != 1:
        raise ValueError(f"split fractions {fractions} are not whole numbers of at most {max_folds} folds "
                         f"({', '.join(f'{k}: {v} ~ {fr[k]}' for k, v in fractions.items())}); use multiples of "
                         f"1/{max_folds} (e.g. 0.7/0.15/0.15) so the folds add up to every image")
    counts = {k: int(f * n) for k, f in fr.items()}
    return n, counts


def assign_splits(df: pd.DataFrame, fractions: dict[str, float], seed: int, group_col: str = "patient_id",
                  stratify_col: str = "label") -> pd.Series:
    """Return the split name of every row; groups never straddle, strata stay balanced."""
    from sklearn.model_selection import StratifiedGroupKFold  # not at import: config checks use fold_counts

    n_folds, counts = fold_counts(fractions)
    n_groups = df[group_col].nunique()
    if n_groups < n_folds:
        raise ValueError(f"{n_groups} groups cannot be split {fractions}: need at least {n_folds} groups")
    # a group's stratum is its most frequent label (ties: alphabetical), so the folds see whole groups
    strata = df.groupby(group_col)[stratify_col].agg(lambda s: s.value_counts().sort_index().idxmax())
    y = df[group_col].map(strata).to_numpy()
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.empty(len(df), dtype=int)
    with warnings.catch_warnings():  # tiny demo classes trigger "least populated class" warnings
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, test_idx) in enumerate(sgkf.split(np.zeros(len(df)), y, df[group_col].to_numpy())):
            fold[test_idx] = k
    order = np.random.default_rng(seed).permutation(n_folds)
    names = [name for name, c in counts.items() for _ in range(c)]
    fold_to_split = {int(order[i]): names[i] for i in range(n_folds)}
    return pd.Series([fold_to_split[f] for f in fold], index=df.index, name="split")


def draw_counts(df: pd.DataFrame, counts: dict[str, dict[str, int]], seed: int, group_col: str = "patient_id",
                stratify_col: str = "label") -> tuple[pd.Series, dict]:
    """Fill ``counts`` (split -> class -> images) with whole groups in a seeded random order: a
    group joins the first split whose remaining quota holds all its images.  Returns each row's
    split (NaN when not drawn) and, per split and class, the images drawn (short when the groups
    run out or do not fit)."""
    order = pd.Series(df[group_col].unique()).sample(frac=1.0, random_state=seed).tolist()
    left = {s: dict(c) for s, c in counts.items()}
    out = pd.Series(np.nan, index=df.index, dtype=object)
    per_group = df.groupby(group_col)[stratify_col].value_counts()
    for g in order:
        need = per_group[g].to_dict()
        for split, quota in left.items():
            if all(quota.get(c, 0) >= n for c, n in need.items()):
                out[df[group_col] == g] = split
                for c, n in need.items():
                    quota[c] -= n
                break
    drawn = {s: {c: int(n - left[s][c]) for c, n in cs.items()} for s, cs in counts.items()}
    return out, drawn


def overlap(df: pd.DataFrame, group_col: str = "patient_id", split_col: str = "split") -> pd.DataFrame:
    """Groups present in more than one split, with the splits they appear in."""
    g = df.groupby(group_col)[split_col].agg(lambda s: sorted(set(s)))
    g = g[g.map(len) > 1]
    return pd.DataFrame({group_col: g.index, "splits": g.map(";".join).to_numpy()})


def make_split(df: pd.DataFrame, *, fractions: dict[str, float], seed: int, keep_source: list[str] = (),
               group_by: str = "patient_id", stratify_by: str = "label", overlap_policy: str = "error",
               counts: dict[str, dict[str, int]] | None = None) -> tuple[pd.DataFrame, dict]:
    """Split ``df`` as described in the module docstring; return (rows with ``split``, audit)."""
    if overlap_policy not in ("error", "drop", "report"):
        raise ValueError(f"overlap must be 'error', 'drop' or 'report', got {overlap_policy!r}")
    df = df.copy()
    kept = df["source_split"].isin(list(keep_source))
    if keep_source and not kept.any():
        raise ValueError(f"keep_source {list(keep_source)}: no image has such a source split "
                         f"(found {sorted(df['source_split'].unique())})")
    df.loc[kept, "split"] = df.loc[kept, "source_split"]
    drawn = None
    if counts and (~kept).any():
        picked, drawn = draw_counts(df.loc[~kept], counts, seed, group_by, stratify_by)
        df.loc[picked.index, "split"] = picked
    rest = df["split"].isna()
    if rest.any():
        if not fractions:
            raise ValueError(f"{int(rest.sum())} images are outside keep_source {list(keep_source)} "
                             "and split.fractions is empty: say how to split them")
        if len(fractions) == 1:
            df.loc[rest, "split"] = next(iter(fractions))
        else:
            df.loc[rest, "split"] = assign_splits(df.loc[rest], fractions, seed, group_by, stratify_by)
    audit: dict = {"seed": seed, "fractions": fractions, "keep_source": list(keep_source), "group_by": group_by}
    if counts:
        audit["counts_asked"], audit["counts_drawn"] = counts, drawn
    ov = overlap(df, group_by)
    audit["overlap_groups_found"] = int(len(ov))
    audit["overlap_examples"] = ov.head(20).to_dict("records")
    if len(ov):
        if overlap_policy == "error":
            raise SplitLeakageError(
                f"{len(ov)} {group_by} value(s) appear in more than one split, e.g. "
                f"{ov.head(5).to_dict('records')}; set split.overlap to 'drop' to remove them from the "
                "re-split part, or to 'report' to keep them and record them in the audit")
        if overlap_policy == "drop":
            leaking = set(ov[group_by])
            drop = df[group_by].isin(leaking) & ~kept
            audit["dropped_images"] = int(drop.sum())
            df = df.loc[~drop]
            remaining = overlap(df, group_by)
            if len(remaining):  # groups straddling two kept source splits cannot be fixed by dropping
                audit["overlap_within_kept_splits"] = remaining.head(20).to_dict("records")
    audit["overlap_groups_after"] = int(len(overlap(df, group_by)))
    audit["counts"] = {s: df.loc[df["split"] == s, stratify_by].value_counts().sort_index().to_dict()
                       for s in sorted(df["split"].unique())}
    return df.reset_index(drop=True), audit


ARMS = ("image", "patient")


def paired_split(df: pd.DataFrame, *, arm: str, fractions: dict[str, float], seed: int, keep_source: list[str] = (),
                 group_by: str = "patient_id", image_col: str = "image_id", stratify_by: str = "label",
                 counts: dict[str, dict[str, int]] | None = None) -> tuple[pd.DataFrame, dict]:
    """One arm of a leakage-inflation pair: the same test images, training sets of the same size.

    Both arms start from one split made image by image (``group_by`` = ``image_col``), as a paper
    that split by image did.  ``arm="image"`` keeps that split's leaks: a patient's other images
    may sit in train or val beside its test images.  ``arm="patient"`` removes them: the train and
    val images of every patient with a test image are dropped, and the others are re-drawn by
    patient: val filled with whole patients up to the image split's val composition
    (:func:`draw_counts`), the rest train.  Then both arms'
    train and val are drawn down, class by class (seeded), to the smaller of their two sizes, so
    the two models differ only in whether they saw the test patients.  Both arms' test rows are
    the same images; the audit counts the test patients whose other images the image arm trains
    or validates on (its exposure).
    """
    if arm not in ARMS:
        raise ValueError(f"split.arm must be one of {ARMS}, got {arm!r}")
    by_image, audit = make_split(df, fractions=fractions, seed=seed, keep_source=keep_source, group_by=image_col,
                                 stratify_by=stratify_by, overlap_policy="report", counts=counts)
    test = by_image["split"] == "test"
    if not test.any():
        raise ValueError("a leakage-inflation pair needs a test split (split.fractions or keep_source must make one)")
    test_patients = set(by_image.loc[test, group_by])
    beside_test = ~test & by_image[group_by].isin(test_patients)
    clean = by_image.loc[~beside_test].copy()
    # the rest re-drawn by patient: val filled with whole patients up to the image split's val
    # composition, the others train (source splits kept as the distributor made them stay)
    redraw = (clean["split"] != "test") & ~clean["source_split"].isin(list(keep_source))
    moved = 0
    if redraw.any():
        before = clean.loc[redraw, "split"].copy()
        val_counts = {"val": by_image.loc[by_image["split"] == "val", stratify_by].value_counts().to_dict()}
        picked, _ = draw_counts(clean.loc[redraw], val_counts, seed, group_by, stratify_by)
        clean.loc[redraw, "split"] = picked.fillna("train") if "train" in set(before) else picked.fillna("val")
        moved = int((clean.loc[redraw, "split"] != before).sum())
    rng = np.random.default_rng(seed)
    arms = {"image": [by_image.loc[test]], "patient": [clean.loc[clean["split"] == "test"]]}
    for split_name in sorted(set(by_image.loc[~test, "split"])):
        for cls in sorted(set(by_image[stratify_by])):
            pools = {"image": by_image.loc[~test & (by_image["split"] == split_name) & (by_image[stratify_by] == cls)],
                     "patient": clean.loc[(clean["split"] == split_name) & (clean[stratify_by] == cls)]}
            size = min(len(p) for p in pools.values())
            for name, pool in pools.items():
                arms[name].append(pool.iloc[np.sort(rng.choice(len(pool), size=size, replace=False))])
    out = pd.concat(arms[arm]).sort_index()
    leaky = pd.concat(arms["image"])
    exposed = set(leaky.loc[leaky["split"] != "test", group_by]) & test_patients
    audit.update({
        "arm": arm, "group_by": image_col, "patient_column": group_by,
        "test_images": int(test.sum()), "test_patients": len(test_patients),
        "test_patients_seen_in_training": len(exposed) if arm == "image" else 0,
        "images_beside_test_dropped": int(beside_test.sum()) if arm == "patient" else 0,
        "images_moved_to_their_patients_split": moved if arm == "patient" else 0,
        "overlap_groups_after": int(len(overlap(out, group_by))),
        "counts": {s: out.loc[out["split"] == s, stratify_by].value_counts().sort_index().to_dict()
                   for s in sorted(out["split"].unique())},
    })
    return out.reset_index(drop=True), audit
