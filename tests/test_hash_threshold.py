"""Measuring the near-duplicate threshold on a set of images: every copy's distance checked against
an independent bit count of the audit's hashes, the distinct pairs against a brute-force one, the
suggested threshold against hand cases, and the command on real files."""
from __future__ import annotations

import itertools

import imagehash
import numpy as np
import pytest
from PIL import Image

from medrepro.cli import main
from medrepro.hash_threshold import PERTURBATIONS, calibrate, youden_threshold
from medrepro.synth.phantoms import chest_radiograph


def _bits(h: imagehash.ImageHash) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(str(h)), np.uint8))


def _xrays(folder, n=6):
    folder.mkdir()
    for k in range(n):
        img = chest_radiograph(np.random.default_rng(k), 160, 160, finding="lobar" if k % 2 else "none").image
        Image.fromarray(img).save(folder / f"cxr{k}.png")
    return sorted(folder.glob("*.png"))


def test_copy_and_distinct_distances_are_the_bits_between_the_audit_hashes(tmp_path):
    files = _xrays(tmp_path / "x")
    res = calibrate([tmp_path / "x"], max_distance=8)
    copies = res["distances"]
    assert len(copies) == len(files) * len(PERTURBATIONS)
    for f, name in [(files[1], "gamma 1.5"), (files[4], "half size"), (files[2], "JPEG q75")]:
        gray = Image.open(f).convert("L")
        copy = PERTURBATIONS[name](gray)
        expected = int((_bits(imagehash.phash(gray, 16)) != _bits(imagehash.phash(copy, 16))).sum())
        assert copies[(copies["image"] == str(f)) & (copies["perturbation"] == name)]["distance"].item() == expected
    hashes = [_bits(imagehash.phash(Image.open(f).convert("L"), 16)) for f in files]
    brute = [int((a != b).sum()) for a, b in itertools.combinations(hashes, 2)]
    assert res["distinct"]["pairs"] == len(brute) == 15 and res["distinct"]["min"] == min(brute)
    tab = res["table"].set_index("perturbation")
    assert tab.loc["gamma 1.5", "max"] == copies[copies["perturbation"] == "gamma 1.5"]["distance"].max()
    assert tab["found at 8"].sum() == res["copies"] - res["missed_at_configured"]
    assert not tab.loc["crop 5 %", "findable"] and tab.loc["JPEG q75", "findable"]   # a crop moves the DCT hash
    assert res["distinct"]["within 8"] == sum(b <= 8 for b in brute)


def test_the_suggested_threshold_is_the_middle_of_the_best_range():
    assert youden_threshold(np.array([0, 2, 10]), np.array([20, 30])) == 14         # J = 1 on 10..19
    assert youden_threshold(np.array([0, 1, 2, 3]), np.array([2, 40, 50, 60])) == 21  # J = 0.75 on 3..39
    assert youden_threshold(np.array([5, 30]), np.array([6, 7, 8, 9, 40])) == 5       # 30 costs four pairs


def test_the_command_prints_the_calibration_and_names_an_empty_folder(tmp_path, capsys):
    _xrays(tmp_path / "x", n=4)
    assert main(["hash-threshold", str(tmp_path / "x"), "--max-distance", "8", "--csv", str(tmp_path / "d.csv")]) == 0
    out = capsys.readouterr().out
    assert "4 images, 32 copies (8 perturbations each), 6 distinct pairs" in out
    assert "Suggested max_distance" in out and "crop 5 %" in out
    assert (tmp_path / "d.csv").read_text().count("\n") == 33
    (tmp_path / "x" / "broken.png").write_bytes(b"not a PNG")
    assert main(["hash-threshold", str(tmp_path / "x"), "--max-distance", "8"]) == 1
    assert f"{tmp_path / 'x' / 'broken.png'}: not an image Pillow can read" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["hash-threshold", str(tmp_path / "empty"), "--max-distance", "8"]) == 1
    assert f"{tmp_path / 'empty'}: no image files" in capsys.readouterr().err


@pytest.mark.parametrize("n", [1])
def test_one_image_is_not_enough(tmp_path, n):
    _xrays(tmp_path / "x", n=n)
    with pytest.raises(ValueError, match="distinct pairs need at least two"):
        calibrate([tmp_path / "x"], 8)
