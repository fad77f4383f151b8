"""Splits: stratified, grouped by patient, seeded; the overlap audit fails loudly."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medrepro.splits import SplitLeakageError, fold_counts, make_split, overlap


def _table(n_patients=120, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = "a" if p % 3 else "b"
        for k in range(int(rng.integers(1, 5))):
            rows.append({"image_id": f"{p}-{k}", "patient_id": f"P{p}", "label": label, "source_split": ""})
    return pd.DataFrame(rows)


def test_fold_counts():
    assert fold_counts({"train": 0.7, "val": 0.15, "test": 0.15}) == (20, {"train": 14, "val": 3, "test": 3})
    assert fold_counts({"train": 0.8, "val": 0.2}) == (5, {"train": 4, "val": 1})
    assert fold_counts({"train": 0.6, "val": 0.2, "test": 0.2}) == (5, {"train": 3, "val": 1, "test": 1})
    with pytest.raises(ValueError, match="sum to 1"):
        fold_counts({"train": 0.7, "val": 0.2})
    # off the 1/20 grid: 0.72/0.14/0.14 would be 13/18 + 1/7 + 1/7 = 127/126 folds (the test split
    # lost a fold); it is refused with the grid to use
    with pytest.raises(ValueError, match="not whole numbers of at most 20 folds.*1/20"):
        fold_counts({"train": 0.72, "val": 0.14, "test": 0.14})
    assert fold_counts({"train": 0.75, "val": 0.2, "test": 0.05}) == (20, {"train": 15, "val": 4, "test": 1})


def test_grouped_stratified_seeded():
    df = _table()
    out, audit = make_split(df, fractions={"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    assert overlap(out).empty and audit["overlap_groups_after"] == 0
    frac = out["split"].value_counts(normalize=True)
    assert abs(frac["train"] - 0.7) < 0.08 and abs(frac["test"] - 0.15) < 0.06
    # class proportions stay close to the whole set's in every split
    whole = (df["label"] == "b").mean()
    for _, part in out.groupby("split"):
        assert abs((part["label"] == "b").mean() - whole) < 0.12
    again, _ = make_split(df, fractions={"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    assert again["split"].tolist() == out["split"].tolist()
    other, _ = make_split(df, fractions={"train": 0.7, "val": 0.15, "test": 0.15}, seed=4)
    assert other["split"].tolist() != out["split"].tolist()


def _with_source_test():
    df = _table(60)
    df["source_split"] = "train"
    test_patients = [f"P{p}" for p in range(0, 60, 6)]
    df.loc[df["patient_id"].isin(test_patients), "source_split"] = "test"
    # one leaking patient: an image of P0 also in the source train folder
    leak = pd.DataFrame([{"image_id": "leak", "patient_id": "P0", "label": "b", "source_split": "train"}])
    return pd.concat([df, leak], ignore_index=True)


def test_overlap_policies():
    df = _with_source_test()
    kw = dict(fractions={"train": 0.8, "val": 0.2}, seed=1, keep_source=["test"])
    with pytest.raises(SplitLeakageError, match="P0"):
        make_split(df, overlap_policy="error", **kw)
    dropped, audit = make_split(df, overlap_policy="drop", **kw)
    assert "leak" not in set(dropped["image_id"]) and audit["dropped_images"] == 1
    assert overlap(dropped).empty
    assert (dropped.loc[dropped["source_split"] == "test", "split"] == "test").all()
    kept, audit = make_split(df, overlap_policy="report", **kw)
    assert "leak" in set(kept["image_id"]) and audit["overlap_groups_after"] == 1
    assert audit["overlap_examples"][0]["patient_id"] == "P0"


def test_too_few_groups():
    df = _table(4)
    with pytest.raises(ValueError, match="need at least 20 groups"):
        make_split(df, fractions={"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)


def test_subset_draws_per_class_seeded():
    from medrepro.prepare import draw_subset

    df = _table(120).assign(**{"class": lambda d: d["label"]})
    sub = draw_subset(df, {"a": 30, "b": 10}, seed=1)
    assert sub["class"].value_counts().to_dict() == {"a": 30, "b": 10}
    assert draw_subset(df, {"a": 30, "b": 10}, seed=1).index.equals(sub.index)
    assert not draw_subset(df, {"a": 30, "b": 10}, seed=2).index.equals(sub.index)
    everything = draw_subset(df, {"b": 10_000}, seed=0)  # fewer than asked: all of them
    assert len(everything) == (df["class"] == "b").sum()


def test_cnn_kermany_split_is_the_papers_train_plus_val_folders_validated_on_test(tmp_path):
    """cnn_kermany trained on the 5,232 images of the train + val folders and validated on the
    test folder; ``merge: {val: train}`` and ``keep_source: [train, test]`` say exactly that."""

    from medrepro import prepare

    from .conftest import demo_config

    cfg = demo_config()
    e = cfg["experiments"]["cnn_kermany"]
    rows = [{"image_id": f"{s}{i}", "png": f"{s}{i}.png", "label": lab, "patient_id": f"p{s}{i}", "source_split": s,
             "boxes": "", "mask_png": "", "width": 8, "height": 8}
            for s, n in (("train", 20), ("val", 4), ("test", 10)) for i in range(n)
            for lab in (["NORMAL", "PNEUMONIA"][i % 2],)]
    rows.append({**rows[0], "image_id": "leak", "png": "leak.png", "source_split": "test"})  # train patient in test
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    out = prepare.split(tmp_path / "m.csv", e, tmp_path / "split.csv", tmp_path / "audit.json")
    assert out["split"].value_counts().to_dict() == {"train": 24, "test": 11}
    assert set(out.loc[out["image_id"].str.startswith("val"), "split"]) == {"train"}
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["merged_source_splits"] == {"val->train": 4} and audit["overlap_groups_found"] == 1
    assert e["train"]["validate_on"] == "test"


def test_counts_draw_a_papers_test_composition_by_whole_patients():
    """cnn_pediatric tested on 203 normal + 313 pneumonia images: ``counts`` draws exactly that
    (whole patients; one- and two-image patients), the rest trains."""
    rng = np.random.default_rng(1)
    rows = []
    for p in range(900):
        label = "normal" if p % 2 else "pneumonia"
        for k in range(int(rng.integers(1, 3))):
            rows.append({"image_id": f"{p}-{k}", "patient_id": f"P{p}", "label": label, "source_split": ""})
    df = pd.DataFrame(rows)
    out, audit = make_split(df, fractions={"train": 1.0}, seed=3,
                            counts={"test": {"normal": 203, "pneumonia": 313}})
    test = out[out["split"] == "test"]
    assert test["label"].value_counts().to_dict() == {"normal": 203, "pneumonia": 313}
    assert audit["counts_drawn"] == {"test": {"normal": 203, "pneumonia": 313}}
    assert set(out["split"]) == {"train", "test"} and len(out) == len(df)
    assert overlap(out).empty
    other, _ = make_split(df, fractions={"train": 1.0}, seed=4, counts={"test": {"normal": 203, "pneumonia": 313}})
    assert set(other.loc[other["split"] == "test", "image_id"]) != set(test["image_id"])  # seeded draw


def test_counts_short_of_images_are_reported_not_invented():
    df = pd.DataFrame([{"image_id": f"{p}", "patient_id": f"P{p}", "label": "a" if p < 5 else "b",
                        "source_split": ""} for p in range(20)])
    out, audit = make_split(df, fractions={"train": 1.0}, seed=0, counts={"test": {"a": 8, "b": 3}})
    assert audit["counts_drawn"] == {"test": {"a": 5, "b": 3}}  # only 5 'a' images exist
    assert (out.loc[out["label"] == "a", "split"] == "test").all()


@pytest.mark.parametrize("keep", [[], ["test"]])
def test_inflation_pair_shares_the_test_images_and_the_training_sizes_and_only_the_image_arm_leaks(keep):
    from medrepro.splits import paired_split

    df = _table(90, seed=4)
    if keep:  # a kept test folder beside a re-split train folder, some test patients in both
        df["source_split"] = np.where(df["patient_id"].str[1:].astype(int) % 5 == 0, "test", "train")
        df.loc[df["image_id"].isin(["5-1", "10-1", "15-1"]), "source_split"] = "train"
        fractions = {"train": 0.8, "val": 0.2}
    else:
        fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    arms = {arm: paired_split(df, arm=arm, fractions=fractions, seed=2, keep_source=keep)
            for arm in ("image", "patient")}
    (img, a_img), (pat, a_pat) = arms["image"], arms["patient"]
    assert set(img.loc[img["split"] == "test", "image_id"]) == set(pat.loc[pat["split"] == "test", "image_id"])
    for s in ("train", "val"):   # the same number of images per class in train and in val
        assert (img[img["split"] == s]["label"].value_counts().sort_index().to_dict()
                == pat[pat["split"] == s]["label"].value_counts().sort_index().to_dict())
    assert overlap(pat).empty and a_pat["overlap_groups_after"] == 0
    test_patients = set(img.loc[img["split"] == "test", "patient_id"])
    seen = set(img.loc[img["split"] != "test", "patient_id"]) & test_patients
    assert a_img["test_patients_seen_in_training"] == len(seen) > 0
    assert a_pat["test_patients_seen_in_training"] == 0 and a_pat["images_beside_test_dropped"] > 0
    assert a_img["test_patients"] == len(test_patients) and a_img["test_images"] == int((img["split"] == "test").sum())
    if keep:  # the kept folder is the test set, as the distributor made it
        assert set(img.loc[img["split"] == "test", "image_id"]) == set(df.loc[df["source_split"] == "test", "image_id"])
    again, _ = paired_split(df, arm="image", fractions=fractions, seed=2, keep_source=keep)
    pd.testing.assert_frame_equal(again, img)
    with pytest.raises(ValueError, match="arm must be one of"):
        paired_split(df, arm="slice", fractions=fractions, seed=2)
