"""How long Snakemake takes to plan the real study, and to find nothing to do in a finished run.

    .venv/bin/python bench/dag.py [--results DIR --configfile A.yaml B.yaml ...] [--repeats 3]

Times, alternating, the median of ``--repeats`` calls of:
  startup      ``snakemake --version`` (the interpreter and Snakemake's imports: the floor)
  plan full    ``snakemake -n --configfile config/full.yaml`` (the whole study's DAG, 107 jobs)
  plan slurm   the same with ``--profile profiles/slurm``
  no-op        ``snakemake -n`` on a finished run (``--configfile`` of that run; its results
               folder must be complete): every output's time stamp and the checkpoint's
               selection read, nothing to do
Goal: under 5 s for each plan and for the no-op rerun.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def timed(args: list[str], expect: str | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([SNAKEMAKE, *args], cwd=REPO, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or (expect and expect not in out):
        sys.exit(f"snakemake {' '.join(args)} failed or did not say {expect!r}:\n{out[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configfile", nargs="*", default=None,
                    help="config files of a finished run, for the no-op rerun (default: none, skipped)")
    args = ap.parse_args()
    cases = {
        "startup": (["--version"], None),
        "plan full": (["-n", "--nolock", "--configfile", "config/full.yaml"], "Job stats"),
        "plan slurm": (["-n", "--nolock", "--profile", "profiles/slurm", "--configfile", "config/full.yaml"],
                       "Job stats"),
    }
    if args.configfile:
        cases["no-op rerun"] = (["-n", "--nolock", "--configfile", *args.configfile], "Nothing to be done")
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, (a, expect) in cases.items():
            times[name].append(timed(a, expect))
    floor = statistics.median(times["startup"])
    print(f"{'case':<14}{'median s':>10}{'above startup':>15}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:<14}{m:>10.2f}{m - floor:>15.2f}")


if __name__ == "__main__":
    main()
