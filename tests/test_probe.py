"""The source probe: the mask hides the lungs and only them; a collection marked outside the lungs
is found, one marked inside them or not at all is not; the class-by-collection arithmetic."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medrepro.datasets import covid
from medrepro.probe import class_source_table, collection, masked, probe, short_names, source_probe


def test_mask_blanks_the_dilated_lungs_and_keeps_everything_else():
    rng = np.random.default_rng(0)
    img = rng.integers(1, 256, (40, 50)).astype(np.uint8)
    lungs = np.zeros((40, 50), bool)
    lungs[10:20, 10:20] = True
    out = masked(img, lungs, dilate=2)
    grown = np.zeros_like(lungs)
    grown[8:22, 8:22] = True   # 2 px of 4-connected growth: the square grows 2 px each side, corners cut
    grown[[8, 8, 21, 21], [8, 21, 8, 21]] = False
    grown[[8, 8, 9, 9, 20, 20, 21, 21], [9, 20, 8, 21, 8, 21, 9, 20]] = False
    assert (out[grown] == 0).all() and (out[~grown] == img[~grown]).all()
    assert (masked(img, lungs, 0)[~lungs] == img[~lungs]).all() and (masked(img, lungs, 0)[lungs] == 0).all()


def test_collections_and_the_class_they_give_away():
    assert collection(json.dumps({"url": " https://x.org/a/data "})) == "https://x.org/a/data"
    assert collection("") == collection("{}") == collection("not json") == "(no URL)"
    assert short_names(["https://k.com/c/rsna/data", "https://g.com/u/rsna", "https://k.com/p/kids"]) == {
        "https://k.com/c/rsna/data": "https://k.com/c/rsna/data", "https://g.com/u/rsna": "https://g.com/u/rsna",
        "https://k.com/p/kids": "kids"}
    rows = pd.DataFrame({"label": ["a"] * 6 + ["b"] * 4, "collection": ["x"] * 5 + ["y"] + ["y"] * 4})
    table, acc = class_source_table(rows)
    assert table.loc["a", "x"] == 5 and table.loc["b", "y"] == 4
    assert acc == pytest.approx((5 + 4) / 10)   # x -> a (5 right), y -> b (4 right, 1 a wrong)


@pytest.mark.parametrize("where", ["outside", "inside", "none"])
def test_probe_finds_a_mark_outside_the_lungs_only(where):
    rng = np.random.default_rng(1)
    n = 120
    src = np.where(np.arange(n) % 3 == 0, "kids", "adults")
    lungs = np.zeros((48, 48), bool)
    lungs[10:38, 8:40] = True
    x = []
    for s in src:
        img = rng.integers(60, 200, (48, 48)).astype(np.uint8)
        if s == "kids" and where == "outside":
            img[1:6, 1:6] = 255
        if s == "kids" and where == "inside":
            img[20:28, 20:28] = 255
        x.append(masked(img, lungs, 2).astype(np.float32).ravel() / 255)
    res = probe(np.array(x), pd.Series(src), folds=5, seed=0)
    assert res["majority_rate"] == pytest.approx(80 / 120) and res["images"] == n
    assert res["ci_low"] <= res["accuracy"] <= res["ci_high"]
    if where == "outside":
        assert res["reading"].startswith("source identifiable") and res["accuracy"] > 0.95
    else:   # a mark the mask hides, or none: nothing to find
        assert res["reading"].startswith("not shown")


def test_source_probe_on_the_covid_stand_in(tmp_path):
    """The stand-in in the real layout: Kermany's children marked outside the lungs are told from
    RSNA's adults within Normal; COVID's two unmarked collections are not told apart."""
    from medrepro import prepare

    raw = tmp_path / "raw"
    prepare.synthesize("covid", raw, {"counts": {"COVID": 30, "Lung_Opacity": 4, "Normal": 40, "Viral Pneumonia": 8},
                                      "image_size": 96, "mask_size": 64, "marked": ["kermany"],
                                      "sources": {"Normal": {"rsna": 0.7, "kermany": 0.3},
                                                  "COVID": {"padchest": 0.5, "ieee8023": 0.5}}}, seed=3)
    prepare.ingest("covid", raw, tmp_path / "manifest.csv", tmp_path / "rejected.csv")
    prepare.convert(tmp_path / "manifest.csv", tmp_path / "images", tmp_path / "converted.csv",
                    tmp_path / "conv_rejected.csv", channels=1, max_side=96)
    result, table, from_source = source_probe(tmp_path / "converted.csv", progress=False)
    by = result.set_index("images of")
    assert by.loc["class Normal", "reading"].startswith("source identifiable")
    assert by.loc["class COVID", "reading"].startswith("not shown")
    assert table.loc["Viral Pneumonia", "chest-xray-pneumonia"] == 8 and table.loc["Lung_Opacity"].sum() == 4
    # independently, from the raw metadata sheets: each URL guesses its most frequent class
    pairs = Counter()
    for cls in covid.CLASSES:
        for url in pd.read_excel(raw / covid.TOP / f"{cls}.metadata.xlsx")["URL"]:
            pairs[cls, url] += 1
    best = {}
    for (cls, url), k in pairs.items():
        best[url] = max(best.get(url, 0), k)
    assert from_source == pytest.approx(sum(best.values()) / 82)
    assert pairs["Normal", covid.COLLECTIONS["kermany"]] == table.loc["Normal", "chest-xray-pneumonia"] > 0
    with Image.open(raw / covid.TOP / "Normal" / "masks" / "Normal-1.png") as m:
        assert m.mode == "RGB"   # the real database's masks are RGB 0/255


def test_an_unreadable_image_is_reported_and_left_out(tmp_path, capsys):
    from medrepro import prepare

    raw = tmp_path / "raw"
    prepare.synthesize("covid", raw, {"counts": {"COVID": 10, "Lung_Opacity": 2, "Normal": 10, "Viral Pneumonia": 4},
                                      "image_size": 64, "mask_size": 64}, seed=5)
    prepare.ingest("covid", raw, tmp_path / "manifest.csv", tmp_path / "rejected.csv")
    prepare.convert(tmp_path / "manifest.csv", tmp_path / "images", tmp_path / "converted.csv",
                    tmp_path / "conv_rejected.csv", channels=1, max_side=64)
    conv = pd.read_csv(tmp_path / "converted.csv")
    bad = conv["mask_png"].iloc[3]
    open(bad, "wb").write(b"not a png")
    result, table, _ = source_probe(tmp_path / "converted.csv", progress=False)
    assert result["unreadable"].iloc[0] == 1 and result["images"].iloc[0] == len(conv) - 1
    assert table.to_numpy().sum() == len(conv) - 1
    assert f"(mask {bad}) left out" in capsys.readouterr().err
