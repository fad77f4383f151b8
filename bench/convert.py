"""Image conversion throughput: the ``convert`` rule's code against its floor and the usual loops.

Writes, once, N RSNA-like 1024x1024 JPEG-Baseline DICOMs and N Kermany-like grayscale JPEGs
(chest radiographs of the real folder's sizes, about 1,200 x 830 px), then converts each set,
in one run, alternating the variants ``--repeats`` times (medians; machine noise hits all alike):

* ``rule``: :func:`medrepro.convert.convert_manifest`, the code the ``convert`` rule runs
  (decode, checks, notes, atomic PNG write, manifest), native size, 8-bit grayscale;
* ``floor``: decoding every input and encoding every PNG with the same decoders and encoder
  (``pydicom`` ``pixel_array`` / Pillow; Pillow PNG at the rule's compression level 1), nothing
  else: the work no conversion can skip;
* ``papers' loop`` (JPEGs only): what the papers' notebooks did per image: ``cv2.imread`` ->
  ``skimage.transform.resize`` to 150 x 150 -> ``skimage.color.rgb2gray``, written back with
  ``cv2.imwrite`` (it keeps the decode and does more work per pixel, then writes a smaller image);
* ``plain loop``: ``pydicom.dcmread(f).pixel_array`` (DICOM) or ``Image.open(f)`` (JPEG) ->
  ``Image.save(png)`` with Pillow's default PNG settings, one file at a time.

Each variant runs on 1 process and on ``--threads`` processes (the loops through a process pool
over files, as a user would parallelise them). Printed: images/s and the ratios
rule / floor (per process count) and N processes / 1 process (per variant).

    python bench/convert.py [--n 48] [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from PIL import Image

from medrepro.convert import convert_manifest
from medrepro.dicom import rsna_dataset
from medrepro.parallel import seeded
from medrepro.synth.phantoms import chest_radiograph


def make_files(d: Path, n: int) -> dict[str, list[Path]]:
    (d / "dicom").mkdir()
    (d / "jpeg").mkdir()
    files: dict[str, list[Path]] = {"dicom": [], "jpeg": []}
    for i in range(n):
        rng = seeded(0, "bench", i)
        img = chest_radiograph(rng, 1024, 1024, "lobar" if i % 3 == 0 else "none", 0.5).image
        f = d / "dicom" / f"bench-{i:04d}.dcm"
        rsna_dataset(img, f.stem, 50, "M", "PA", 0.143, uid_rng=rng).save_as(f, enforce_file_format=True)
        files["dicom"].append(f)
        w = int(np.clip(rng.normal(1195, 300), 384, 2772))
        h = int(np.clip(w * rng.normal(0.69, 0.08), 127, 2304))
        f = d / "jpeg" / f"bench-{i:04d}.jpeg"
        Image.fromarray(chest_radiograph(rng, h, w, "none", 0.5).image).save(f, quality=90)
        files["jpeg"].append(f)
    return files


def _decode(f: Path) -> np.ndarray:
    if f.suffix == ".dcm":
        return pydicom.dcmread(f).pixel_array
    with Image.open(f) as im:
        return np.asarray(im)


def floor_one(job) -> None:
    f, out = job
    Image.fromarray(_decode(f)).save(Path(out) / f"{f.stem}.png", compress_level=1)


def plain_one(job) -> None:
    f, out = job
    img = pydicom.dcmread(f).pixel_array if f.suffix == ".dcm" else Image.open(f)
    (Image.fromarray(img) if isinstance(img, np.ndarray) else img).save(Path(out) / f"{f.stem}.png")


def papers_one(job) -> None:
    import cv2
    from skimage.color import rgb2gray
    from skimage.transform import resize

    f, out = job
    img = resize(cv2.imread(str(f)), (150, 150))
    gray = rgb2gray(img)
    cv2.imwrite(str(Path(out) / f"{f.stem}.png"), np.rint(gray * 255).astype(np.uint8))


def loop(fn, files: list[Path], out: Path, processes: int) -> None:
    jobs = [(f, out) for f in files]
    if processes <= 1:
        for j in jobs:
            fn(j)
    else:
        with ProcessPoolExecutor(processes) as ex:
            list(ex.map(fn, jobs, chunksize=max(1, len(jobs) // (processes * 8))))


def rule(files: list[Path], out: Path, processes: int) -> None:
    m = pd.DataFrame({"image_id": [f.stem for f in files], "path": [str(f) for f in files], "boxes": "[]",
                      "mask_path": ""})
    conv, rej = convert_manifest(m, out, channels=1, max_side=None, threads=processes)
    assert rej.empty and len(conv) == len(files), rej


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medrepro-bench-"))
    try:
        files = make_files(tmp, args.n)
        variants = {"rule": lambda fs, o, p: rule(fs, o, p),
                    "floor": lambda fs, o, p: loop(floor_one, fs, o, p),
                    "papers' loop": lambda fs, o, p: loop(papers_one, fs, o, p),
                    "plain loop": lambda fs, o, p: loop(plain_one, fs, o, p)}
        procs = sorted({1, args.threads})
        runs = [(kind, name, p) for kind in files for name in variants for p in procs
                if not (kind == "dicom" and name == "papers' loop")]
        times: dict[tuple, list[float]] = {r: [] for r in runs}
        for rep in range(args.repeats):
            for kind, name, p in runs:
                out = tmp / "out"
                out.mkdir()
                t0 = time.perf_counter()
                variants[name](files[kind], out, p)
                times[(kind, name, p)].append(time.perf_counter() - t0)
                shutil.rmtree(out)
        ips = {r: args.n / statistics.median(v) for r, v in times.items()}
        mb = {k: sum(f.stat().st_size for f in v) / 1e6 for k, v in files.items()}
        print(f"{args.n} files per kind ({mb['dicom']:.1f} MB of 1024x1024 JPEG-Baseline DICOM, "
              f"{mb['jpeg']:.1f} MB of grayscale JPEG), {os.cpu_count()} CPUs, median of {args.repeats}; images/s")
        print("| input | variant | " + " | ".join(f"{p} process{'es' * (p > 1)}" for p in procs)
              + f" | {procs[-1]}p / 1p |")
        print("|---|---|" + "---|" * (len(procs) + 1))
        for kind in files:
            for name in variants:
                if (kind, name, 1) not in ips:
                    continue
                row = [f"{ips[(kind, name, p)]:.1f}" for p in procs]
                print(f"| {kind} | {name} | " + " | ".join(row)
                      + f" | {ips[(kind, name, procs[-1])] / ips[(kind, name, 1)]:.2f}x |")
        for kind in files:
            print(f"{kind}: rule / floor = " + ", ".join(
                f"{ips[(kind, 'rule', p)] / ips[(kind, 'floor', p)]:.2f} ({p}p)" for p in procs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
