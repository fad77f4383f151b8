"""The leakage audit on real PNG and JPEG files: planted copies are found, distinct pictures are
not, and each pair is placed on its splits."""
from __future__ import annotations

import json

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from medrepro import datasets
from medrepro.leakage import _popcount, audit_splits, duplicate_pairs, hash_images, planted_ids, split_leaks


def _picture(seed: int, size: int = 96) -> np.ndarray:
    """A smooth random picture (blurred noise): natural-looking, distinct per seed."""
    rng = np.random.default_rng(seed)
    small = rng.random((8, 8))
    return (np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)))


def _converted(tmp_path, n: int = 12):
    """A converted manifest of ``n`` distinct PNGs, where image 5 is a byte copy of image 1 and
    image 7 is image 2 brightened and saved again."""
    d = tmp_path / "images"
    d.mkdir()
    rows = []
    for i in range(n):
        path = d / f"im{i}.png"
        Image.fromarray(_picture(i)).save(path)
        rows.append({"image_id": f"im{i}", "png": str(path)})
    (d / "im5.png").write_bytes((d / "im1.png").read_bytes())
    Image.fromarray(np.clip(_picture(2).astype(int) + 6, 0, 255).astype(np.uint8)).save(d / "im7.png")
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv"


def test_popcount_matches_python():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2 ** 63, 100, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 100, dtype=np.uint64)
    assert _popcount(x).tolist() == [bin(int(v)).count("1") for v in x]


def test_hashes_find_the_copies_and_only_them(tmp_path):
    h = hash_images(_converted(tmp_path), progress=False)
    def ph(i):
        return imagehash.phash(Image.open(tmp_path / "images" / f"im{i}.png").convert("L"), hash_size=16)
    assert h["phash"].tolist()[3] == str(ph(3))
    pairs = duplicate_pairs(h)
    assert set(zip(pairs["image_id_a"], pairs["image_id_b"])) == {("im1", "im5"), ("im2", "im7")}
    got = pairs.set_index("image_id_a")
    assert bool(got.loc["im1", "identical"]) and got.loc["im1", "distance"] == 0
    assert not bool(got.loc["im2", "identical"]) and got.loc["im2", "distance"] == ph(2) - ph(7) <= 8
    # every distance equals imagehash's own Hamming distance
    every = duplicate_pairs(h, max_distance=256)
    assert len(every) == 12 * 11 // 2
    assert all(int(r.distance) == ph(r.image_id_a[2:]) - ph(r.image_id_b[2:]) for r in every.itertuples())
    # between two tables: every image of a matches itself in b
    both = duplicate_pairs(h.iloc[:4], h.iloc[:4], max_distance=0)
    assert set(zip(both["image_id_a"], both["image_id_b"])) >= {(f"im{i}", f"im{i}") for i in range(4)}


def test_split_leaks_and_table(tmp_path):
    h = hash_images(_converted(tmp_path), progress=False)
    split = pd.DataFrame({"image_id": [f"im{i}" for i in range(12)],
                          "split": ["train"] * 6 + ["test"] * 6,
                          "patient_id": [f"p{i}" for i in range(12)],
                          "class": ["a", "a", "a", "a", "a", "b"] + ["a"] * 6})
    leaks = split_leaks(split, duplicate_pairs(h))
    by = {(r.image_id_a, r.image_id_b): r for r in leaks.itertuples()}
    assert not by[("im1", "im5")].across_splits          # both in train
    assert by[("im2", "im7")].across_splits              # train vs test: a leak
    assert by[("im1", "im5")].label_conflict and not by[("im2", "im7")].label_conflict  # one picture, two labels
    split.to_csv(tmp_path / "split.csv", index=False)
    # three patients straddled the splits; overlap: drop removed them (0 after)
    (tmp_path / "audit.json").write_text(json.dumps({"overlap_groups_found": 3, "overlap_groups_after": 0}))
    table, pairs = audit_splits({"e": (tmp_path / "split.csv", tmp_path / "audit.json")}, {"e": "d"}, {"d": h},
                                across=[("d", "d")])
    row = table.iloc[0]
    assert (row["patients in two splits"], row["patients in two splits before overlap handling"],
            row["label conflicts"], row["identical across splits"], row["near-duplicates across splits"],
            row["duplicate pairs within a split"], row["test images with a copy in train"]) == (0, 3, 1, 0, 1, 1, 1)
    assert table.iloc[1]["split of"] == "d vs d" and table.iloc[1]["identical across splits"] >= 13


def test_synthetic_stand_ins_plant_what_they_say(tmp_path):
    root = tmp_path / "raw"
    made = datasets.get("kermany").synthesize(
        root, 3, counts={"train": {"NORMAL": 6, "PNEUMONIA": 6}, "test": {"NORMAL": 3, "PNEUMONIA": 3}},
        size_scale=0.05, duplicates={"exact": 1, "near": 1})
    planted = made["planted_duplicates"]
    assert [p["kind"] for p in planted] == ["identical", "near-duplicate"]
    ex, near = planted
    assert (root / ex["src"]).read_bytes() == (root / ex["dst"]).read_bytes()
    a, b = (imagehash.phash(Image.open(root / near[k]).convert("L"), hash_size=16) for k in ("src", "dst"))
    assert (root / near["src"]).read_bytes() != (root / near["dst"]).read_bytes() and a - b <= 8
    assert near["src"].split("/")[-2] == near["dst"].split("/")[-2]     # same class folder
    # planted files map to the ids ingest gives them
    res = datasets.get("kermany").ingest(root)
    res.manifest.to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "S.json").write_text(json.dumps({"planted_duplicates": planted}))
    ids = planted_ids(tmp_path / "S.json", tmp_path / "m.csv")
    assert {i["dst_id"] for i in ids} <= set(res.manifest["image_id"])


def test_covid_stand_in_copies_kermany_pictures_and_the_audit_finds_them_across(tmp_path):
    """As the real COVID-19 Radiography Database took Kermany's images: the covid stand-in copies
    the Kermany stand-in's pictures (grey scale, resized to 299 square); converted and hashed like
    the workflow does, every copy is found between the two datasets, and nothing else is."""
    from medrepro import prepare
    from medrepro.leakage import planted_across_ids, write_leakage

    raw = {d: tmp_path / "raw" / d for d in ("kermany", "covid")}
    prepare.synthesize("kermany", raw["kermany"], {"counts": {"train": {"NORMAL": 8, "PNEUMONIA": 16},
                                                              "val": {"NORMAL": 1, "PNEUMONIA": 1},
                                                              "test": {"NORMAL": 2, "PNEUMONIA": 2}},
                                                   "size_scale": 0.1, "duplicates": {}}, seed=4)
    prepare.synthesize("covid", raw["covid"], {"counts": {"COVID": 4, "Lung_Opacity": 2, "Normal": 8,
                                                          "Viral Pneumonia": 6},
                                               "image_size": 96, "mask_size": 64, "marked": ["kermany"],
                                               "sources": {"Normal": {"rsna": 0.5, "kermany": 0.5}},
                                               "duplicates": {"exact": 1}, "copies": {"kermany": 3}},
                       seed=4, copy_roots={"kermany": raw["kermany"]})
    made = json.loads((raw["covid"] / "SYNTHETIC.json").read_text())
    assert len(made["planted_across"]) == 3 and {p["kind"] for p in made["planted_across"]} == {"copy from kermany"}
    for it in made["planted_across"]:   # a Normal copy comes from NORMAL, a Viral Pneumonia one from a virus file
        cls = it["dst"].split("/")[1]
        assert ("/NORMAL/" in it["src"]) == (cls == "Normal") and (cls == "Normal" or "_virus_" in it["src"])
        with Image.open(raw["covid"] / it["dst"]) as im:
            assert im.size == (96, 96) and im.mode == "L"
    manifests, hashes = {}, {}
    for d in raw:
        prepare.ingest(d, raw[d], tmp_path / f"{d}.csv", tmp_path / f"{d}.rej.csv")
        prepare.convert(tmp_path / f"{d}.csv", tmp_path / d / "images", tmp_path / d / "manifest.csv",
                        tmp_path / d / "rej.csv", channels=1, max_side=256 if d == "kermany" else 96)
        manifests[d] = tmp_path / f"{d}.csv"
        hashes[d] = tmp_path / f"{d}.hash.csv"
        hash_images(tmp_path / d / "manifest.csv", progress=False).to_csv(hashes[d], index=False)
    ids = planted_across_ids(raw["covid"] / "SYNTHETIC.json", manifests)
    pairs = duplicate_pairs(pd.read_csv(hashes["covid"], dtype={"phash": str}),
                            pd.read_csv(hashes["kermany"], dtype={"phash": str}))
    assert set(zip(pairs["image_id_a"], pairs["image_id_b"])) == {(i["dst_id"], i["src_id"]) for i in ids}
    write_leakage({}, {}, hashes, tmp_path / "audit", across=[["covid", "kermany"]],
                  synthetic={"covid": raw["covid"] / "SYNTHETIC.json"}, manifests=manifests)
    planted = pd.read_csv(tmp_path / "audit" / "planted.csv")
    assert len(planted) == 1 + 3 and (planted["found"] == "yes").all()
    assert planted["copy of"].str.startswith("kermany: chest_xray/train/").sum() == 3
