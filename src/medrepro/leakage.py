"""Leakage audit: the same patient or the same picture on both sides of a split, or in two datasets.

A test score means little when test images also sit in the training set: the same patient
(the split's own audit, ``split_audit.json``, counts patients that straddle splits), the same
file (byte-identical), or the same picture re-encoded, resized or brightened (a near-duplicate).
Pictures are compared by a perceptual hash (``imagehash.phash`` with ``hash_size`` 16: 256 bits,
whether each of the 16 x 16 lowest frequencies of the image's discrete cosine transform lies
above their median; Zauner 2010, https://www.phash.org/docs/pubs/thesis_zauner.pdf): two images
whose hashes differ in at most ``max_distance`` bits are reported as near-duplicates.  The
64-bit hash (``hash_size`` 8) is too coarse for medical images, which share one layout: distinct
synthetic fundus photographs came within 0 bits of each other, while at 256 bits they stay at
least 18 apart and a brightened or half-size copy within 4.  Datasets known to reuse one another
(the COVID-19 Radiography Database includes images of the RSNA and Kermany collections) are
compared with each other too.

Everything found is reported; nothing is removed: what a paper's split contained is what it
contained, and the report says what that means for its test numbers.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

HASH_COLUMNS = ["image_id", "png", "sha256", "phash"]
HASH_SIZE = 16          # 16 x 16 = 256 bits
HASH_WORDS = HASH_SIZE * HASH_SIZE // 64


def perceptual_hash(im):
    """The audit's perceptual hash of a Pillow image (its grayscale): ``imagehash.phash`` with
    ``hash_size`` 16, an ``ImageHash`` (``str`` gives 64 hex digits, ``a - b`` the bits apart)."""
    import imagehash

    return imagehash.phash(im.convert("L"), hash_size=HASH_SIZE)


def hash_images(converted_manifest, progress: bool = True) -> pd.DataFrame:
    """SHA-256 of each converted PNG's bytes and its 256-bit perceptual hash (64 hex digits)."""
    from PIL import Image
    from tqdm import tqdm

    df = pd.read_csv(converted_manifest)
    rows = []
    for image_id, png in tqdm(zip(df["image_id"], df["png"]), total=len(df), disable=not progress,
                              desc=f"hash {Path(converted_manifest).parent.name}", mininterval=5):
        path = Path(png)   # as the converted manifest gives it (relative to the working directory)
        data = path.read_bytes()
        with Image.open(path) as im:
            ph = str(perceptual_hash(im))
        rows.append((image_id, str(png), hashlib.sha256(data).hexdigest(), ph))
    return pd.DataFrame(rows, columns=HASH_COLUMNS)


def _bits(hexes: pd.Series) -> np.ndarray:
    """Hex hashes -> (n, HASH_WORDS) uint64."""
    raw = b"".join(int(h, 16).to_bytes(HASH_WORDS * 8, "big") for h in hexes)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(hexes), HASH_WORDS)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x)


def duplicate_pairs(a: pd.DataFrame, b: pd.DataFrame | None = None, max_distance: int = 8,
                    memory: int = 2 ** 27) -> pd.DataFrame:
    """Pairs of images whose perceptual hashes differ in at most ``max_distance`` bits.

    Within ``a`` when ``b`` is None (each pair once), else between ``a`` and ``b``.  Columns
    ``image_id_a``, ``image_id_b``, ``distance`` (bits) and ``identical`` (same bytes).
    """
    same = b is None
    b = a if same else b
    ha, hb = _bits(a["phash"]), _bits(b["phash"])
    chunk = max(1, memory // max(1, len(hb) * HASH_WORDS * 8))   # rows of a compared at once
    out = []
    for start in range(0, len(ha), chunk):
        d = _popcount(ha[start:start + chunk, None] ^ hb[None, :]).sum(axis=-1, dtype=np.int64)
        i, j = np.nonzero(d <= max_distance)
        i = i + start
        keep = j > i if same else np.ones(len(i), bool)
        out += [(int(x), int(y), int(d[x - start, y])) for x, y in zip(i[keep], j[keep])]
    pairs = pd.DataFrame(out, columns=["ia", "ib", "distance"])
    res = pd.DataFrame({"image_id_a": a["image_id"].to_numpy()[pairs["ia"]],
                        "image_id_b": b["image_id"].to_numpy()[pairs["ib"]],
                        "distance": pairs["distance"].astype(int),
                        "identical": a["sha256"].to_numpy()[pairs["ia"]] == b["sha256"].to_numpy()[pairs["ib"]]})
    return res.sort_values(["distance", "image_id_a", "image_id_b"], ignore_index=True)


def split_leaks(split: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The duplicate pairs of one experiment's split: each pair's two splits and patients, and
    whether it crosses splits (a leak) or stays inside one."""
    cols = ["split", "patient_id"] + (["class"] if "class" in split else [])
    where = split.set_index("image_id")[cols]
    p = pairs[pairs["image_id_a"].isin(where.index) & pairs["image_id_b"].isin(where.index)].copy()
    p["split_a"] = where.loc[p["image_id_a"], "split"].to_numpy()
    p["split_b"] = where.loc[p["image_id_b"], "split"].to_numpy()
    p["patient_a"] = where.loc[p["image_id_a"], "patient_id"].astype(str).to_numpy()
    p["patient_b"] = where.loc[p["image_id_b"], "patient_id"].astype(str).to_numpy()
    p["across_splits"] = p["split_a"] != p["split_b"]
    if "class" in split:  # the same picture under two labels
        p["class_a"] = where.loc[p["image_id_a"], "class"].astype(str).to_numpy()
        p["class_b"] = where.loc[p["image_id_b"], "class"].astype(str).to_numpy()
        p["label_conflict"] = p["class_a"] != p["class_b"]
    else:
        p["label_conflict"] = False
    return p.reset_index(drop=True)


def audit_splits(splits: dict, datasets: dict, hashes: dict, max_distance: int = 8,
                 across: list | tuple = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leakage table and the pairs behind it.

    ``splits``: name -> (split.csv, split_audit.json) of each experiment or study;
    ``datasets``: name -> its dataset; ``hashes``: dataset -> :func:`hash_images` table;
    ``across``: pairs of datasets compared with each other.
    Returns (one row per split and one per dataset pair, every pair found).
    """
    within = {d: duplicate_pairs(h, max_distance=max_distance) for d, h in hashes.items()}
    rows, found = [], []
    for name, (split_csv, audit_json) in splits.items():
        split = pd.read_csv(split_csv)
        audit = json.loads(Path(audit_json).read_text())
        leaks = split_leaks(split, within[datasets[name]])
        cross = leaks[leaks["across_splits"]]
        before = int(audit.get("overlap_groups_found", 0))
        rows.append({"split of": name, "dataset": datasets[name], "images": len(split),
                     # after the split's overlap handling (split.overlap: drop removes them), and before
                     "patients in two splits": int(audit.get("overlap_groups_after", before)),
                     "patients in two splits before overlap handling": before,
                     "label conflicts": int(leaks["label_conflict"].sum()),
                     "identical across splits": int(cross["identical"].sum()),
                     "near-duplicates across splits": int((~cross["identical"]).sum()),
                     "duplicate pairs within a split": int((~leaks["across_splits"]).sum()),
                     "test images with a copy in train": int(_test_in_train(cross))})
        found.append(leaks.assign(**{"split of": name, "dataset_a": datasets[name], "dataset_b": datasets[name]}))
    for da, db in across:
        if da not in hashes or db not in hashes:
            continue
        pairs = duplicate_pairs(hashes[da], hashes[db], max_distance=max_distance)
        rows.append({"split of": f"{da} vs {db}", "dataset": f"{da}, {db}",
                     "images": len(hashes[da]) + len(hashes[db]), "patients in two splits": None,
                     "patients in two splits before overlap handling": None, "label conflicts": None,
                     "identical across splits": int(pairs["identical"].sum()),
                     "near-duplicates across splits": int((~pairs["identical"]).sum()),
                     "duplicate pairs within a split": None, "test images with a copy in train": None})
        found.append(pairs.assign(**{"split of": f"{da} vs {db}", "dataset_a": da, "dataset_b": db,
                                     "across_splits": True}))
    table = pd.DataFrame(rows)
    for c in table.columns[2:]:
        table[c] = table[c].astype("Int64")
    cols = ["split of", "dataset_a", "image_id_a", "dataset_b", "image_id_b", "distance", "identical",
            "split_a", "split_b", "patient_a", "patient_b", "across_splits"]
    pairs = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=cols)
    return table, pairs.reindex(columns=cols)


def _test_in_train(cross: pd.DataFrame) -> int:
    test_a = (cross["split_a"] == "test") & (cross["split_b"] == "train")
    test_b = (cross["split_b"] == "test") & (cross["split_a"] == "train")
    return len(set(cross.loc[test_a, "image_id_a"]) | set(cross.loc[test_b, "image_id_b"]))


def _image_ids(synthetic_json, manifest_csv):
    """rel path (under the stand-in's root) -> the image id its ingest manifest gave the file."""
    paths = pd.read_csv(manifest_csv, usecols=["image_id", "path"])
    by_path = dict(zip(paths["path"].map(lambda x: Path(x).as_posix()), paths["image_id"]))

    def image_id(rel):
        hits = [i for p, i in by_path.items() if p.endswith("/" + rel)]
        if len(hits) != 1:
            raise ValueError(f"{synthetic_json}: planted file {rel!r} is {len(hits)} rows of {manifest_csv}")
        return hits[0]
    return image_id


def planted_ids(synthetic_json, manifest_csv) -> list[dict]:
    """The duplicates a synthetic stand-in planted (its ``SYNTHETIC.json``), with the image ids
    the ingest manifest gave their files."""
    planted = json.loads(Path(synthetic_json).read_text()).get("planted_duplicates", [])
    image_id = _image_ids(synthetic_json, manifest_csv)
    return [{**it, "src_id": image_id(it["src"]), "dst_id": image_id(it["dst"])} for it in planted]


def planted_across_ids(synthetic_json, manifests: dict) -> list[dict]:
    """The pictures a stand-in copied from another (``planted_across`` of its ``SYNTHETIC.json``),
    with the image ids of both; ``manifests``: dataset -> ingest manifest (the copying one under
    its own ``dataset`` name in the JSON)."""
    info = json.loads(Path(synthetic_json).read_text())
    items = info.get("planted_across", [])
    if not items:
        return []
    mine = _image_ids(synthetic_json, manifests[info["dataset"]])
    out = []
    for it in items:
        if it["dataset"] not in manifests:
            continue   # the other dataset is not part of this run
        theirs = _image_ids(synthetic_json, manifests[it["dataset"]])
        out.append({**it, "dst_id": mine(it["dst"]), "src_id": theirs(it["src"])})
    return out


def write_leakage(splits: dict, datasets: dict, hash_files: dict, out_dir, *, max_distance: int = 8,
                  across=(), synthetic: dict | None = None, manifests: dict | None = None,
                  scale: str = "demo") -> pd.DataFrame:
    """Run :func:`audit_splits` and write ``leakage`` (CSV, Markdown, LaTeX), ``pairs.csv`` and
    ``provenance.json`` into ``out_dir``.  ``synthetic``: dataset -> its stand-in's
    ``SYNTHETIC.json`` and ``manifests``: dataset -> its ingest manifest, so that the duplicates
    the stand-ins planted are listed with whether the audit found them (``planted``)."""
    planted = {d: planted_ids(f, manifests[d]) for d, f in (synthetic or {}).items() if Path(f).is_file()}
    from .io import atomic_dir, write_csv, write_json
    from .provenance import record, short
    from .tables import scale_note, write_table

    hashes = {d: pd.read_csv(f, dtype={"phash": str}) for d, f in hash_files.items()}
    table, pairs = audit_splits(splits, datasets, hashes, max_distance, across)
    planted_rows = []
    for d, items in planted.items():   # searched among all of the dataset's images, in a split or not
        got = duplicate_pairs(hashes[d], max_distance=max_distance)
        seen = set(zip(got["image_id_a"], got["image_id_b"])) | set(zip(got["image_id_b"], got["image_id_a"]))
        for it in items:
            planted_rows.append({"dataset": d, "kind": it["kind"], "image": it["dst"], "copy of": it["src"],
                                 "found": "yes" if (it["dst_id"], it["src_id"]) in seen else "no"})
    for d, f in (synthetic or {}).items():   # copies across datasets, searched as the `across` pairs are
        if not Path(f).is_file():
            continue
        for it in planted_across_ids(f, manifests or {}):
            other = it["dataset"]
            if other not in hashes:
                continue
            got = duplicate_pairs(hashes[d], hashes[other], max_distance=max_distance)
            seen = set(zip(got["image_id_a"], got["image_id_b"]))
            compared = any(set(pair) == {d, other} for pair in map(tuple, across))
            planted_rows.append({"dataset": d, "kind": it["kind"], "image": it["dst"],
                                 "copy of": f"{other}: {it['src']}",
                                 "found": ("yes" if (it["dst_id"], it["src_id"]) in seen else "no")
                                 + ("" if compared else f" ({d} vs {other} is not under leakage.across)")})
    prov = record({"max_distance": max_distance, "across": [list(x) for x in across]})
    with atomic_dir(out_dir) as tmp:
        write_table(table, tmp / "leakage", caption=f"patients and images shared between splits (perceptual hash, "
                    f"at most {max_distance} of {HASH_WORDS * 64} bits apart)", note=scale_note(scale),
                    provenance=short(prov))
        write_csv(tmp / "pairs.csv", pairs)
        if planted_rows:
            write_table(pd.DataFrame(planted_rows), tmp / "planted", caption="duplicates planted in the synthetic "
                        "stand-ins, and whether the audit found them", note=scale_note(scale), provenance=short(prov))
        write_json(tmp / "provenance.json", prov)
    return table
