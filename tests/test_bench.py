"""Benchmarks at smoke sizes: the GPU benchmark on the CPU, every variant and GPU-only branch
included, and the CPU training benchmark (timings are never asserted)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_smoke_run(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--tiny", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["run"]["device"] == "cpu" and res["run"]["torch"] and "threads" in res["run"]
    rows = res["rows"]
    measures = [(x["measure"], x["amp"], x.get("channels_last")) for x in rows]
    fit_rows = [m for m in measures if m[0].startswith("classifier training (fit)")]
    assert len(fit_rows) == 5 and {m[1:] for m in fit_rows} == {(a, c) for a in (False, True) for c in (False, True)}
    assert ("classifier training (model step)", True, True) in measures
    for m in ("Mask R-CNN training (train_detector)", "Mask R-CNN training (model step)",
              "Mask R-CNN inference (predict_coco)"):
        assert {x[1] for x in measures if x[0] == m} == {False, True}
    assert all(x["images_per_s"] > 0 and math.isfinite(x["images_per_s"]) for x in rows)
    assert "| measure | model | batch | AMP | channels-last | images/s | peak GiB |" in r.stdout
    assert "cpu (no GPU)" in r.stdout


def test_cpu_training_benchmark_smoke_run():
    """Every row of the CPU training benchmark (memory formats of the demo's models, Adam variants)
    runs at smoke sizes; the ratios it prints are what bench/README.md quotes at full size."""
    r = subprocess.run([sys.executable, str(REPO / "bench" / "cpu_training.py"), "--tiny"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    names = [line.split(" | ")[0][2:] for line in rows]
    assert sum("channels-last" in line for line in rows) == 8 and {"foreach", "fused"} <= {
        line.split(" | ")[1] for line in rows}
    assert any(n.startswith("cnn_kermany") for n in names) and any(n.startswith("vgg16 fine-tuning") for n in names)
    for line in rows:
        assert float(line.split(" | ")[-1].strip(" |")) > 0


def test_scale_benchmark_smoke_run(tmp_path):
    """bench/scale.py at n = 8, 16, 32: every stage of the data chain runs in its own process with
    its peak memory its own, and the projections to the real counts follow from the rows."""
    out = tmp_path / "scale.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "scale.py"), "--tiny", "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["sizes"] == [8, 16, 32]
    stages = {s["stage"]: s for s in res["stages"]}
    assert list(stages) == ["ingest", "convert", "hash", "pairs", "split", "bootstrap", "features_vgg16",
                            "features_resnet50", "features_inception_v3", "tables"]
    for s in stages.values():
        assert len(s["seconds"]) == 3 and all(x > 0 and math.isfinite(x) for x in s["seconds"])
        for p in s["projection"].values():
            assert p["hours"] >= 0 and p["peak_gib"] > 0 and p["disk_gib"] >= 0
    # each stage's own memory (not the parent's): the VGG-16 features need far more than the pair search
    assert stages["features_vgg16"]["peak_mib"][-1] > 3 * stages["pairs"]["peak_mib"][-1]
    # the flattened caches at full.yaml's sizes: 25,088 floats an image (VGG-16, 7 x 7 x 512), 100,352
    # (ResNet-50, 7 x 7 x 2,048), 131,072 (Inception-V3 at 299 px, 8 x 8 x 2,048): the files grow so
    for b, floats in (("vgg16", 25088), ("resnet50", 100352), ("inception_v3", 131072)):
        disk = stages[f"features_{b}"]["disk_mib"]
        assert math.isclose((disk[2] - disk[1]) * 2**20 / 16, 4 * floats, rel_tol=0.01), b
    assert "COVID-19 Radiography (21,165)" in stages["tables"]["projection"]
    # conversion writes the PNGs: disk grows with the images and projects linearly to the real count
    conv = stages["convert"]
    assert conv["disk_mib"][0] < conv["disk_mib"][1] < conv["disk_mib"][2]
    big = conv["projection"]["RSNA (26,684)"]["disk_gib"]
    assert big > conv["projection"]["Kermany (5,856)"]["disk_gib"] > conv["disk_mib"][-1] / 1024
    assert "| stage | s at 8 | s at 16 | s at 32 |" in r.stdout


def test_scale_projection_arithmetic():
    """The projection: a line through the sizes where growth is about linear or lost in the noise,
    n^k beyond the largest size where the per-image part grows faster."""
    sys.path.insert(0, str(REPO / "bench"))
    import scale

    assert scale.growth([10, 20, 40], [5.0, 7.0, 11.0]) == 1.0         # 2 s, then 4 s more: linear
    assert scale.growth([10, 20, 40], [1.0, 4.0, 16.0]) == 2.0         # quadratic
    assert scale.growth([10, 20, 40], [5.0, 5.01, 5.02]) is None       # noise
    assert math.isclose(scale.project([10, 20, 40], [5.0, 7.0, 11.0], 400), 0.2 * 400 + 3.0)
    assert math.isclose(scale.project([10, 20, 40], [1.0, 4.0, 16.0], 400), 16.0 * 10 ** 2)


def test_the_seed_shift_overlay_validates_and_reseeds_every_run(tmp_path):
    """bench/demo_seeds.py's overlay: it must load beside the demo's config (the leakage-inflation
    pairs, derived when the config loads, are not listed: they follow their shifted source) and
    shift every run's training, subset and split seeds by k."""
    import yaml

    sys.path.insert(0, str(REPO / "bench"))
    import demo_seeds

    from medrepro.config import load_config

    cfg = load_config(REPO / "config")
    over = tmp_path / "overlay.yaml"
    over.write_text(yaml.safe_dump(demo_seeds.overlay(cfg, 2, tmp_path / "seed-2")))
    shifted = load_config(REPO / "config", [over])
    assert shifted["seed"] == cfg["seed"] + 2 and shifted["results"] == str(tmp_path / "seed-2")
    for group in ("experiments", "studies"):
        assert set(shifted[group]) == set(cfg[group])
        for name, e in cfg[group].items():
            assert shifted[group][name]["train"]["seed"] == e["train"]["seed"] + 2, name
            for key in ("subset", "split"):
                if isinstance(e.get(key), dict) and "seed" in e[key]:
                    assert shifted[group][name][key]["seed"] == e[key]["seed"] + 2, (name, key)


def test_the_seed_table_of_chosen_papers_from_finished_runs(tmp_path):
    """bench/demo_seeds.py --papers: only those papers' headlines, read from each seed's results (here
    finished runs given by --existing, so nothing runs); a paper the config lacks is refused."""
    import subprocess

    header = "experiment,metric,reproduced,ci_low,ci_high,chance,margin,above chance,CI above chance\n"
    rows = {0: "mr_exp1,exp1 image-level accuracy,0.7368,0.6053,0.8947,0.5263,0.2105,yes,yes\n",
            1: "mr_exp1,exp1 image-level accuracy,0.45,0.30,0.60,0.50,-0.05,no,no\n"}
    for k, row in rows.items():
        d = tmp_path / f"seed-{k}" / "papers" / "maskrcnn_opacity" / "tables"
        d.mkdir(parents=True)
        (d / "headline.csv").write_text(header + row)
    script = [sys.executable, str(REPO / "bench" / "demo_seeds.py"), "--seeds", "0", "1",
              "--existing", f"0={tmp_path / 'seed-0'}", f"1={tmp_path / 'seed-1'}"]
    out = subprocess.run(script + ["--papers", "maskrcnn_opacity"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("| maskrcnn_opacity")]
    assert len(lines) == 1 and "cnn_kermany" not in out.stdout
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells == ["maskrcnn_opacity", "mr_exp1", "exp1 image-level accuracy", "0.737 [0.61, 0.89] / 0.526",
                     "0.450 [0.30, 0.60] / 0.500 (not above)", "1/2"]
    bad = subprocess.run(script + ["--papers", "maskrcnn"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode != 0 and "--papers: ['maskrcnn'] not papers of the config" in bad.stderr
