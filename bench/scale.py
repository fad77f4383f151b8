"""What the real run costs: the data chain at growing sizes, each stage's growth and its projection.

Writes a Kermany-like stand-in at the real image size (chest radiographs of about 1,200 x 830 px,
JPEG) at n, 2n and 4n images, and runs the workflow's own code on each, one stage per fresh
process (so its peak memory is its own, imports included): ingest, conversion to PNG (max side
1,024, as config/full.yaml), perceptual hashing, the leakage pair search, a patient-grouped split,
the bootstrap of a test set's metrics at 1,000 resamples by patient, the feature caches of the
transfer studies (config/full.yaml's: VGG-16 and ResNet-50 at 224 px, Inception-V3 at 299,
flattened, through the features rule's code; random weights cost the same) and stage 1's loading
of the largest of them into its training, validation and test tables.
Per stage: seconds, peak resident memory, the disk it wrote, the growth exponent of its per-image
part (seconds ~ a + b n^k, from the increments over the three sizes) and the projection to the
real datasets' counts (Kermany's 5,856 JPEGs; the COVID-19 Radiography Database's 21,165, the
largest with feature caches; RSNA's 26,684, the largest set, for the stages whose cost is per image
rather than per file format).

    .venv/bin/python bench/scale.py               # n = 100, 200, 400
    .venv/bin/python bench/scale.py --tiny        # n = 8, 16, 32: the suite's smoke run
    .venv/bin/python bench/scale.py --stages features_inception_v3 tables   # those stages only
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

REAL = {"Kermany (5,856)": 5856, "COVID-19 Radiography (21,165)": 21165, "RSNA (26,684)": 26684}
BACKBONES = ("vgg16", "resnet50", "inception_v3")   # config/full.yaml's study feature caches
STAGES = ("ingest", "convert", "hash", "pairs", "split", "bootstrap", *(f"features_{b}" for b in BACKBONES),
          "tables")
# what each stage needs run before it
NEEDS = {"convert": ("ingest",), "hash": ("convert",), "pairs": ("hash",), "split": ("ingest",),
         "bootstrap": ("ingest",), **{f"features_{b}": ("convert",) for b in BACKBONES},
         "tables": ("features_inception_v3",)}


def _counts(n: int) -> dict:
    """n images in the real release's proportions: folders train / val / test, a quarter NORMAL."""
    test, val = max(n * 624 // 5856, 2), 2
    train = n - test - val
    normal = train * 27 // 100
    return {"train": {"NORMAL": normal, "PNEUMONIA": train - normal}, "val": {"NORMAL": 1, "PNEUMONIA": 1},
            "test": {"NORMAL": test * 3 // 8, "PNEUMONIA": test - test * 3 // 8}}


def stage(name: str, work: Path, n: int) -> dict:
    """Run one stage on the stand-in of ``n`` images under ``work`` (in this process)."""
    from medrepro import prepare

    raw, conv = work / "raw", work / "converted"
    if name == "synthesize":   # the stand-in, written in a child so that the parent stays small
        prepare.synthesize("kermany", raw, {"counts": _counts(n), "size_scale": 1.0, "difficulty": 0.5,
                                            "nested_duplicate": False}, seed=n)
    elif name == "ingest":
        prepare.ingest("kermany", raw, work / "manifest.csv", work / "rejected.csv")
    elif name == "convert":
        prepare.convert(work / "manifest.csv", conv / "images", conv / "manifest.csv", conv / "rejected.csv",
                        channels=1, max_side=1024)
    elif name == "hash":
        from medrepro.leakage import hash_images
        hash_images(conv / "manifest.csv", progress=False).to_csv(work / "hashes.csv", index=False)
    elif name == "pairs":
        import pandas as pd

        from medrepro.leakage import duplicate_pairs
        h = pd.read_csv(work / "hashes.csv", dtype={"phash": str})
        duplicate_pairs(h, h).to_csv(work / "pairs.csv", index=False)
    elif name == "split":
        import pandas as pd

        from medrepro.splits import make_split
        df = pd.read_csv(work / "manifest.csv")
        out, _ = make_split(df.assign(source_split=""), fractions={"train": 0.8, "test": 0.2}, seed=0)
        out.to_csv(work / "split.csv", index=False)
    elif name == "bootstrap":
        import pandas as pd

        from medrepro.metrics import paper_scores
        from medrepro.uncertainty import bootstrap_metrics
        df = pd.read_csv(work / "manifest.csv")
        rng = np.random.default_rng(0)
        y = (df["label"] == "PNEUMONIA").astype(int).to_numpy()
        rows = pd.DataFrame({"target": y, "pred": np.where(rng.random(len(y)) < 0.85, y, 1 - y),
                             "patient_id": df["patient_id"].astype(str)})
        res = bootstrap_metrics(rows, lambda r: paper_scores(r, ["normal", "pneumonia"]), "patient_id",
                                n_resamples=1000, seed=0)
        (work / "bootstrap.json").write_text(json.dumps(res))
    elif name.startswith("features_"):   # the features rule's code at full.yaml's study settings
        from medrepro.classify.features import extract_features
        backbone = name.removeprefix("features_")
        extract_features(conv / "manifest.csv", _study_model(backbone), None, 0, work / f"{name}.pt",
                         {"device": "cpu", "gpus": 0, "amp": False, "allow_cpu": True, "channels_last": True})
    elif name == "tables":   # stage 1's loading: the largest features into train, validation and test tables
        import pandas as pd

        from medrepro.classify.features import feature_table, load_features
        feats = load_features(work / "features_inception_v3.pt")
        df = pd.read_csv(work / "converted" / "manifest.csv").assign(target=0)
        part = np.arange(len(df)) % 10
        tables = [feature_table(feats, df[(part >= lo) & (part < hi)]) for lo, hi in ((0, 7), (7, 8), (8, 10))]
        assert sum(len(t) for t in tables) == len(df)
    else:
        raise ValueError(f"unknown stage {name!r}; expected one of {STAGES}")
    return {}


def _study_model(backbone: str) -> dict:
    """config/full.yaml's model of a transfer-study run with ``backbone`` (its input size, channels,
    flattened features)."""
    from medrepro.config import load_config
    from medrepro.plan import study_run_spec

    cfg = load_config(REPO / "config", [REPO / "config" / "full.yaml"])
    return study_run_spec(cfg["studies"]["tm_C19"], backbone)["model"]


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def measure(name: str, work: Path, n: int, threads: int) -> dict:
    """One stage in a fresh process: wall seconds, its peak resident memory, the bytes it wrote."""
    before = _du(work)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, __file__, "--stage", name, "--work", str(work), "--n", str(n)], env=env)
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {name} failed at n = {n}")
    return {"stage": name, "n": n, "seconds": seconds, "peak_mib": usage.ru_maxrss / 1024,
            "disk_mib": (_du(work) - before) / 2**20}


def growth(sizes, values) -> float | None:
    """The exponent k of the per-image part of a cost (values ~ a + b n^k), from its increments over
    n, 2n, 4n: (v(4n) - v(2n)) / (v(2n) - v(n)) = 2^k; None where the increments are lost in the
    noise (not both positive and above a tenth of the value)."""
    d1, d2 = values[1] - values[0], values[2] - values[1]
    if min(d1, d2) <= 0.1 * max(values[-1], 1e-9):
        return None
    return float(np.log2(d2 / d1))


def project(sizes, values, count: int, superlinear: bool = True) -> float:
    """``values`` at ``count``: a least-squares line a + b n through the three sizes (b >= 0) where
    the cost grows about linearly; where its per-image part grows faster (k > 1.2, ``superlinear``),
    the largest size scaled by (count / n)^k."""
    k = growth(sizes, values)
    if superlinear and k is not None and k > 1.2:
        return values[-1] * (count / sizes[-1]) ** k
    b, a = np.polyfit(sizes, values, 1)
    return float(max(a, 0.0) + max(b, 0.0) * count)


def table(rows: list[dict], sizes: list[int], stages=STAGES) -> tuple[str, list[dict]]:
    """The Markdown table of the stages: seconds per size, the growth exponent of the per-image
    part, peak memory and disk at the largest size, and the projections to the real counts
    (hours at one thread, peak memory, disk written)."""
    out = []
    lines = ["| stage | " + " | ".join(f"s at {n}" for n in sizes) + " | growth k | peak MiB | disk MiB | "
             + " | ".join(f"projected to {k}" for k in REAL) + " |",
             "|---|" + "---|" * (len(sizes) + 3 + len(REAL))]
    for name in stages:
        r = [x for x in rows if x["stage"] == name]
        secs, mem, disk = ([x[f] for x in r] for f in ("seconds", "peak_mib", "disk_mib"))
        k = growth(sizes, secs)
        # memory and disk: the least-squares line through the sizes (a slope lost in the noise still
        # counts: the projection errs high, as a job's memory request should)
        proj = {label: {"hours": project(sizes, secs, count) / 3600,
                        "peak_gib": max(project(sizes, mem, count, superlinear=False), max(mem)) / 1024,
                        "disk_gib": project(sizes, disk, count, superlinear=False) / 1024}
                for label, count in REAL.items()}
        out.append({"stage": name, "seconds": secs, "growth": k, "peak_mib": mem, "disk_mib": disk,
                    "projection": proj})
        cells = [f"{p['hours']:.2f} h, {p['peak_gib']:.1f} GiB, {p['disk_gib']:.1f} GiB disk" for p in proj.values()]
        lines.append(f"| {name} | " + " | ".join(f"{x:.1f}" for x in secs) + " | "
                     + (f"{k:.2f}" if k is not None else "(noise)") + f" | {mem[-1]:,.0f} | {disk[-1]:,.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="the smallest size; then 2n and 4n")
    ap.add_argument("--tiny", action="store_true", help="n = 8 (the suite's smoke run)")
    ap.add_argument("--threads", type=int, default=1, help="threads per stage (a workflow job's)")
    ap.add_argument("--out", type=Path, help="also write the rows and projections as JSON")
    ap.add_argument("--stages", nargs="+", choices=STAGES, metavar="STAGE",
                    help=f"only these stages (and, unmeasured, those they need); one of {', '.join(STAGES)}")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:   # a child: one stage
        stage(args.stage, args.work, args.n)
        return 0
    chosen = [x for x in STAGES if x in (args.stages or STAGES)]
    needed = set(chosen)
    for name in reversed(STAGES):   # NEEDS points backwards: one pass from the end closes it
        if name in needed:
            needed.update(NEEDS.get(name, ()))
    n0 = 8 if args.tiny else args.n
    sizes = [n0, 2 * n0, 4 * n0]
    rows = []
    # the parent imports nothing heavy: Linux counts a child's peak memory from the parent's at fork
    with tempfile.TemporaryDirectory(prefix="medrepro-scale-") as tmp:
        for n in sizes:
            work = Path(tmp) / f"n{n}"
            work.mkdir()
            made = measure("synthesize", work, n, args.threads)
            print(f"n = {n}: stand-in written in {made['seconds']:.0f} s", file=sys.stderr)
            for name in (x for x in STAGES if x in needed):
                row = measure(name, work, n, args.threads)
                if name in chosen:
                    rows.append(row)
                print(f"  {name}: {row['seconds']:.1f} s, {row['peak_mib']:.0f} MiB", file=sys.stderr)
            shutil.rmtree(work)
    md, fitted = table(rows, sizes, chosen)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"Kermany-like JPEGs at the real size; {args.threads} thread(s) a stage; {machine}\n")
    print(md)
    if args.out:
        args.out.write_text(json.dumps({"sizes": sizes, "threads": args.threads, "machine": machine,
                                        "rows": rows, "stages": fitted}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
