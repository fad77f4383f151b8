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
