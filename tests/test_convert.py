"""Conversion to the PNG contract, in parallel, with rejections instead of crashes."""
from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image

from medrepro import datasets
from medrepro.convert import convert_manifest


def test_convert_all_formats(raw, tmp_path):
    root, _ = raw
    for name, channels in (("rsna", 1), ("kermany", 1), ("covid", 1), ("brain_tumor", 1), ("rfmid", 3)):
        m = datasets.get(name).ingest(root / name).manifest
        conv, rej = convert_manifest(m, tmp_path / name, channels=channels, max_side=128, threads=2)
        assert rej.empty and len(conv) == len(m)
        for row in conv.head(4).itertuples():
            with Image.open(row.png) as im:
                assert im.mode == ("L" if channels == 1 else "RGB")
                assert max(im.size) <= 128 and im.size == (row.width, row.height)
            if row.mask_png:
                with Image.open(row.mask_png) as mk:
                    assert mk.size == (row.width, row.height)
                    assert set(np.unique(np.asarray(mk))) <= {0, 255}


def test_boxes_follow_the_resize(raw, tmp_path):
    root, _ = raw
    m = datasets.rsna.ingest(root / "rsna").manifest
    conv, _ = convert_manifest(m, tmp_path, max_side=64)
    for a, b in zip(m["boxes"], conv["boxes"]):
        a, b = np.array(json.loads(a)), np.array(json.loads(b))
        assert a.shape == b.shape
        if a.size:
            assert np.allclose(a * 64 / 256, b, atol=1e-3)


def test_parallel_equals_serial(raw, tmp_path):
    root, _ = raw
    m = datasets.kermany.ingest(root / "kermany").manifest
    a, _ = convert_manifest(m, tmp_path / "a", threads=1)
    b, _ = convert_manifest(m, tmp_path / "b", threads=2)
    assert a.drop(columns=["png", "mask_png"]).equals(b.drop(columns=["png", "mask_png"]))
    for pa, pb in zip(a["png"], b["png"]):
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))


def test_corrupt_file_is_rejected_and_run_goes_on(raw, tmp_path):
    root, _ = raw
    src = tmp_path / "kermany"
    shutil.copytree(root / "kermany", src)
    victim = sorted((src / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # truncated JPEG: the header still opens
    m = datasets.kermany.ingest(src).manifest
    conv, rej = convert_manifest(m, tmp_path / "out", max_side=64)
    assert len(conv) == len(m) - 1 and len(rej) == 1
    assert rej.iloc[0]["file"] == str(victim) and "cannot convert image" in rej.iloc[0]["reason"]
