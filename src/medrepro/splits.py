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
