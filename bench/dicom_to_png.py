"""DICOM -> PNG throughput: medrepro's conversion against a one-file-at-a-time loop.

Writes N RSNA-like 1024x1024 JPEG-Baseline DICOMs, then converts them, in one run:

* baseline: ``for f in files: pydicom.dcmread(f).pixel_array -> PIL.Image.save(png)``
  (Pillow's default PNG settings), one file at a time;
* medrepro: :func:`medrepro.convert.convert_manifest` with ``threads`` worker
  processes and fast PNG compression (level 1), the same code the ``convert`` rule runs;
  also with one process, to separate what the PNG settings and the processes give.

The two are run alternately ``--repeats`` times and the median of each is
reported with the ratio, so machine noise hits both alike.

    python bench/dicom_to_png.py [--n 48] [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import pydicom
from PIL import Image

from medrepro.convert import convert_manifest
from medrepro.dicom import rsna_dataset
from medrepro.parallel import seeded
from medrepro.synth.phantoms import chest_radiograph


def make_files(d: Path, n: int) -> list[Path]:
    files = []
    for i in range(n):
        rng = seeded(0, "bench", i)
        img = chest_radiograph(rng, 1024, 1024, "lobar" if i % 3 == 0 else "none", 0.5).image
        f = d / f"bench-{i:04d}.dcm"
        rsna_dataset(img, f.stem, 50, "M", "PA", 0.143, uid_rng=rng).save_as(f, enforce_file_format=True)
        files.append(f)
    return files


def baseline(files: list[Path], out: Path) -> None:
    for f in files:
        Image.fromarray(pydicom.dcmread(f).pixel_array).save(out / f"{f.stem}.png")


def medrepro_convert(files: list[Path], out: Path, threads: int) -> None:
    m = pd.DataFrame({"image_id": [f.stem for f in files], "path": [str(f) for f in files], "boxes": "[]",
                      "mask_path": ""})
    conv, rej = convert_manifest(m, out, channels=1, max_side=None, threads=threads)
    assert rej.empty and len(conv) == len(files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medrepro-bench-"))
    try:
        src = tmp / "dcm"
        src.mkdir()
        files = make_files(src, args.n)
        mb = sum(f.stat().st_size for f in files) / 1e6
        runs = {"baseline": lambda out: baseline(files, out),
                "medrepro-1": lambda out: medrepro_convert(files, out, 1),
                "medrepro": lambda out: medrepro_convert(files, out, args.threads)}
        times = {k: [] for k in runs}
        for r in range(args.repeats):
            for name, fn in runs.items():
                out = tmp / f"{name}-{r}"
                out.mkdir()
                t0 = time.perf_counter()
                fn(out)
                times[name].append(time.perf_counter() - t0)
                shutil.rmtree(out)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.n} DICOMs 1024x1024 JPEG Baseline ({mb:.1f} MB), {os.cpu_count()} CPUs, "
              f"medrepro threads={args.threads}, median of {args.repeats}")
        for k, v in med.items():
            runs_s = ", ".join(f"{x:.2f}" for x in times[k])
            print(f"  {k:10s} {args.n / v:7.1f} images/s   ({v:.2f} s; runs: {runs_s})")
        print(f"  ratio medrepro (1 process) / baseline: {med['baseline'] / med['medrepro-1']:.2f}x")
        print(f"  ratio medrepro ({args.threads} processes) / baseline: {med['baseline'] / med['medrepro']:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
