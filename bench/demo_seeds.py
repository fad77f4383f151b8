"""Does the demo learn on other seeds?  Reruns the demo workflow with every seed shifted and
prints each paper's headline metrics against chance, per seed.

For each ``--seeds`` value k (0 is the shipped demo), the run gets an overlay config that adds k to
the top-level ``seed`` (so every synthetic dataset is drawn anew), to every experiment's and
study's training seed, and to every subset and split seed; its results go to
``<--out>/seed-<k>/``.  The runs are sequential (2 cores are the demo's budget), each timed.
Reads each paper's ``tables/headline.csv`` (the report's learning check: the metric beside the
majority rate of the same test set) and prints one table: a row per headline, a column per seed.

    python bench/demo_seeds.py [--seeds 0 1 2] [--cores 2] [--out bench/out/demo-seeds] [--existing 0=results]
                               [--papers maskrcnn_opacity ...]

``--existing K=DIR`` reads seed shift K from a finished run's results folder instead of running it
(say, the shipped demo's ``results/`` for K = 0). ``--papers`` runs and reports those papers only
(the jobs their tables need), for a change that touches one paper's models: a few minutes a seed
instead of the whole demo.
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from medrepro.config import load_config

REPO = Path(__file__).resolve().parents[1]


def overlay(cfg: dict, k: int, results: Path) -> dict:
    """The config changes of seed shift ``k``: data, subsets, splits and training all re-seeded."""
    out: dict = {"results": str(results), "seed": int(cfg["seed"]) + k, "experiments": {}, "studies": {}}
    for group in ("experiments", "studies"):
        for name, e in cfg.get(group, {}).items():
            if e.get("inflation_of"):   # derived when the config loads, from its shifted source
                continue
            o = out[group].setdefault(name, {})
            o["train"] = {"seed": int(e["train"]["seed"]) + k}
            for key in ("subset", "split"):
                if isinstance(e.get(key), dict) and "seed" in e[key]:
                    o[key] = {"seed": int(e[key]["seed"]) + k}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "demo-seeds")
    ap.add_argument("--snakemake", default=str(Path(sys.executable).with_name("snakemake")))
    ap.add_argument("--existing", nargs="*", default=[], metavar="K=DIR",
                    help="seed shift K already run, its results in DIR")
    ap.add_argument("--papers", nargs="+", metavar="PAPER", help="only these papers (default: every paper)")
    a = ap.parse_args()
    existing = {int(k): Path(d) for k, d in (e.split("=", 1) for e in a.existing)}
    cfg = load_config(REPO / "config")
    papers = a.papers or list(cfg["papers"])
    unknown = sorted(set(papers) - set(cfg["papers"]))
    if unknown:
        raise SystemExit(f"--papers: {unknown} not papers of the config; expected some of {sorted(cfg['papers'])}")
    runs, times = {}, {}
    for k in sorted(set(a.seeds) | set(existing)):
        if k in existing:
            results = existing[k]
        else:
            results = (a.out / f"seed-{k}").resolve()
            results.mkdir(parents=True, exist_ok=True)
            over = results / "overlay.yaml"
            over.write_text(yaml.safe_dump(overlay(copy.deepcopy(cfg), k, results)))
            targets = [str(results / "papers" / p) for p in papers] if a.papers else []
            t0 = time.perf_counter()
            proc = subprocess.run([a.snakemake, "--cores", str(a.cores), *targets, "--configfile", str(over), "-q"],
                                  cwd=REPO, capture_output=True, text=True)
            times[k] = time.perf_counter() - t0
            if proc.returncode:
                raise SystemExit(f"seed shift {k} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
            print(f"seed shift {k}: {times[k]:.0f} s", file=sys.stderr, flush=True)
        runs[k] = results
    print(headline_table(runs, papers))
    print("\nworkflow wall time per seed: " + ", ".join(f"+{k}: {v:.0f} s" for k, v in times.items()))


def headline_table(runs: dict[int, Path], papers: list[str]) -> str:
    """A Markdown table of ``papers``' headline rows (each ``tables/headline.csv``) over the seed shifts
    of ``runs`` (shift -> results folder): a column per shift, value [95 % CI] / chance, and how many
    shifts put each headline above chance."""
    frames = []
    for k, results in sorted(runs.items()):
        for paper in papers:
            h = pd.read_csv(Path(results) / "papers" / paper / "tables" / "headline.csv")
            h.insert(0, "paper", paper)
            h["seed"] = k
            frames.append(h)
    allh = pd.concat(frames, ignore_index=True)

    def cell(r) -> str:
        ci = f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if pd.notna(r.get("ci_low")) else ""
        return f"{r['reproduced']:.3f}{ci} / {r['chance']:.3f}" + ("" if r["above chance"] == "yes" else " (not above)")

    allh["cell"] = allh.apply(cell, axis=1)
    wide = allh.pivot_table(index=["paper", "experiment", "metric"], columns="seed", values="cell",
                            aggfunc="first", sort=False)
    wide.columns = [f"seed +{k}: value [95 % CI] / chance" for k in wide.columns]
    above = allh.groupby(["paper", "experiment", "metric"], sort=False)["above chance"].apply(
        lambda s: f"{(s == 'yes').sum()}/{len(s)}")
    wide["above chance"] = above
    return wide.reset_index().to_markdown(index=False)


if __name__ == "__main__":
    main()
