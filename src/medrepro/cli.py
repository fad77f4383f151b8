"""The ``medrepro`` command.

``medrepro doctor``
    checks what a run will need (:mod:`medrepro.doctor`) with the same config files and
    targets as the run, e.g. ``medrepro doctor cnn_kermany --profile profiles/slurm --configfile
    config/full.yaml``; exits with status 1 when a check fails.
``medrepro report``
    prints where a finished run's report is and opens its HTML pages in a browser.
``medrepro licences``
    lists the installed dependencies (``--extra download`` adds an extra's) and their licences.
``medrepro hash-threshold IMAGES...``
    measures the leakage audit's near-duplicate threshold on a set of images (files or folders,
    e.g. a run's ``results/converted/covid``): how far copies of each (contrast, gamma, resized,
    cropped, re-encoded) and distinct pictures are apart (:mod:`medrepro.hash_threshold`).

Run from the workflow's folder (the one with ``config/``), as snakemake is.
"""
from __future__ import annotations

import argparse
import sys
import webbrowser
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medrepro", description="medrepro: checks before a run, and its report")
    sub = p.add_subparsers(dest="command", required=True)
    lic = sub.add_parser("licences", help="list the installed dependencies and their licences",
                         description="the installed dependencies of medrepro (and of the extras named) and their "
                                     "licences, from the installed packages' metadata")
    lic.add_argument("--extra", action="append", default=[], help="an extra to include (download, slurm, ...)")
    ht = sub.add_parser("hash-threshold", help="measure the leakage audit's near-duplicate threshold on images",
                        description="copies each image as dataset builders did (contrast, gamma, resize, crop, "
                                    "JPEG) and compares the perceptual hashes of copies and of distinct images")
    ht.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    ht.add_argument("--max-distance", type=int, default=None,
                    help="the threshold to check (default: the config's leakage.max_distance)")
    ht.add_argument("--config-dir", default="config", help="the workflow's config folder (default: config)")
    ht.add_argument("--csv", help="also write each copy's distance to this CSV")
    for name, text in (("doctor", "check the environment, config, data, weights, GPUs and SLURM before a run"),
                       ("report", "show where the report of a finished run is and open it in a browser")):
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("--configfile", nargs="+", default=[], metavar="FILE",
                       help="the config files given to snakemake (laid over config/config.yaml)")
        s.add_argument("--config-dir", default="config", help="the workflow's config folder (default: config)")
        if name == "doctor":
            s.add_argument("targets", nargs="*", metavar="TARGET",
                           help="snakemake's targets: paper names check only what those papers need (before "
                                "--configfile, as with snakemake); none checks everything")
            s.add_argument("--profile", help="the snakemake profile of the run, e.g. profiles/slurm")
            s.add_argument("--gpu-node", action="store_true",
                           help="this is a GPU node (e.g. under srun --gpus=1): a GPU torch cannot see is a failure")
        else:
            s.add_argument("--results", help="the results folder (default: the config's `results`)")
            s.add_argument("--no-open", action="store_true", help="print the paths only")
    return p


def doctor(args) -> int:
    from .doctor import FAIL, format_checks, run_checks

    constraints = Path(args.config_dir).resolve().parent / "constraints.txt"  # beside config/
    checks = run_checks(args.config_dir, args.configfile, profile=args.profile, on_gpu_node=args.gpu_node,
                        constraints=constraints, targets=args.targets)
    print(format_checks(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


def report(args) -> int:
    if args.results:
        results = Path(args.results)
    else:
        from .config import load_config

        results = Path(load_config(args.config_dir, args.configfile)["results"])
    html, md = results / "html" / "index.html", results / "report.md"
    if not html.is_file():
        print(f"medrepro: no report at {html}: run the workflow first (snakemake --cores all"
              + "".join(f" --configfile {f}" for f in args.configfile) + ")", file=sys.stderr)
        return 1
    print(f"HTML report: {html.resolve()}")
    if md.is_file():
        print(f"Markdown:    {md.resolve()}")
    if not args.no_open and not webbrowser.open(html.resolve().as_uri()):
        print("(no browser found here: open the file above in one)")
    return 0


def licences(args) -> int:
    from .licences import table

    print(table(tuple(args.extra)))
    return 0


def hash_threshold(args) -> int:
    from .hash_threshold import calibrate, summary

    m = args.max_distance
    if m is None:
        from .config import load_config

        m = int(load_config(args.config_dir)["leakage"]["max_distance"])
    try:
        result = calibrate(args.images, m)
    except (FileNotFoundError, ValueError) as exc:
        print(f"medrepro hash-threshold: {exc}", file=sys.stderr)
        return 1
    print(summary(result))
    if args.csv:
        from .io import write_csv

        write_csv(args.csv, result["distances"])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return {"doctor": doctor, "report": report, "licences": licences,
            "hash-threshold": hash_threshold}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
