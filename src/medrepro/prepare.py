"""The data steps every paper shares (rules of ``acquire.smk``, ``ingest.smk``, ``convert.smk`` and
``split.smk``): synthetic stand-ins, raw files to a manifest, conversion to PNG, contact sheets
and the experiment's split.  Files in, files out; each step writes its outputs atomically.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from .io import atomic_dir, read_csv, write_csv, write_json
from .splits import make_split, paired_split


# ----------------------------------------------------------------------------- acquire
def synthesize(dataset: str, out_dir: str | Path, params: dict, seed: int, threads: int = 1,
               copy_roots: dict | None = None) -> None:
    """Write the synthetic stand-in of ``dataset`` into ``out_dir`` (built aside, then moved in);
    ``copy_roots``: the other stand-ins' folders, by dataset, whose pictures it copies
    (``synthetic.copies``)."""
    from . import datasets
    extra = {"copy_roots": copy_roots} if copy_roots else {}
    with atomic_dir(out_dir) as tmp:
        made = datasets.get(dataset).synthesize(tmp, seed, threads=threads, **params, **extra)
        write_json(tmp / "SYNTHETIC.json", {"dataset": dataset, "seed": seed, "params": params,
                                            "planted_duplicates": (made or {}).get("planted_duplicates", []),
                                            "planted_across": (made or {}).get("planted_across", []),
                                            "note": "synthetic stand-in written by medrepro in the real layout"})


# ----------------------------------------------------------------------------- ingest / convert
def ingest(dataset: str, raw_root: str | Path, manifest_out, rejected_out, threads: int = 1,
           checksums: str | Path | None = None) -> pd.DataFrame:
    """Read a dataset's raw files into a manifest; with ``checksums`` (a downloaded dataset's
    SHA-256 manifest) the raw files are first checked to be the ones downloaded."""
    from . import datasets
    if checksums:
        from .download import verify_checksums
        verify_checksums(raw_root, checksums)
        print(f"{raw_root}: every raw file matches {checksums}", file=sys.stderr)
    res = datasets.get(dataset).ingest(raw_root, threads=threads)
    manifest = res.manifest
    if manifest.empty:
        raise ValueError(f"{raw_root}: no image of {dataset} could be read; see {rejected_out}")
    write_csv(manifest_out, manifest)
    write_csv(rejected_out, res.rejections)
    print(f"{dataset}: {len(manifest)} images, {len(res.rejections)} rejected "
          f"(labels: {manifest['label'].value_counts().to_dict()})", file=sys.stderr)
    return manifest


def convert(manifest_in, images_dir, manifest_out, rejected_out, channels: int = 1, max_side: int | None = 1024,
            threads: int = 1) -> pd.DataFrame:
    from .convert import convert_manifest
    manifest = read_csv(manifest_in)
    conv, rejected = convert_manifest(manifest, images_dir, channels, max_side, threads)
    write_csv(manifest_out, conv)
    write_csv(rejected_out, rejected)
    print(f"converted {len(conv)} images, {len(rejected)} rejected", file=sys.stderr)
    return conv


def contact_sheet(converted_manifest, dataset: str, out_stem, per_class: int = 6, style: dict | None = None,
                  scale: str = "demo", seed: int = 0) -> None:
    from .figures import apply_style, contact_sheet_figure, save_figure
    from .tables import scale_note
    apply_style(style)
    df = read_csv(converted_manifest)
    fig = contact_sheet_figure(df, f"{dataset}: {len(df)} images", per_class=per_class, seed=seed)
    save_figure(fig, out_stem, style, note=scale_note(scale))


# ----------------------------------------------------------------------------- split
def class_table(df: pd.DataFrame, classes: list[dict]) -> pd.DataFrame:
    """Keep rows whose dataset label belongs to a configured class; add ``class`` and ``target``."""
    mapping = {}
    for k, c in enumerate(classes):
        for lab in c["labels"]:
            if lab in mapping:
                raise ValueError(f"dataset label {lab!r} is mapped to two classes")
            mapping[lab] = (k, c["name"])
    known = df["label"].isin(mapping)
    out = df.loc[known].copy()
    out["target"] = out["label"].map(lambda v: mapping[v][0])
    out["class"] = out["label"].map(lambda v: mapping[v][1])
    return out


def draw_subset(table: pd.DataFrame, per_class: dict[str, int], seed: int) -> pd.DataFrame:
    """A seeded random subset with ``per_class[name]`` images of each class (all of a class if fewer)."""
    parts = []
    for name, n in per_class.items():
        pool = table[table["class"] == name]
        if len(pool) < n:
            print(f"subset: class {name!r} has {len(pool)} images, fewer than the {n} asked; all are used",
                  file=sys.stderr)
        parts.append(pool.sample(n=min(n, len(pool)), random_state=seed))
    return pd.concat(parts).sort_index()


def split(converted_manifest, experiment: dict, split_out, audit_out) -> pd.DataFrame:
    df = read_csv(converted_manifest)
    table = known = class_table(df, experiment["classes"])
    missing = [lab for c in experiment["classes"] for lab in c["labels"] if lab not in set(df["label"])]
    s = experiment["split"]
    if s.get("sources"):
        table = table[table["source_split"].isin(s["sources"])]
    merged = {}
    if s.get("merge"):  # e.g. {val: train}: those images count as the other source split
        merged = {f"{a}->{b}": int((table["source_split"] == a).sum()) for a, b in s["merge"].items()}
        table = table.assign(source_split=table["source_split"].replace(s["merge"]))
    subset = experiment.get("subset")
    if subset:
        table = draw_subset(table, subset["per_class"], subset["seed"])
    s = experiment["split"]
    if s.get("arm"):  # one arm of a leakage-inflation pair (config `inflation`)
        out, audit = paired_split(table, arm=s["arm"], fractions=s["fractions"], seed=s["seed"],
                                  keep_source=s["keep_source"], group_by=s["group_by"], stratify_by="class",
                                  counts=s.get("counts") or None)
    else:
        out, audit = make_split(table, fractions=s["fractions"], seed=s["seed"], keep_source=s["keep_source"],
                                group_by=s["group_by"], stratify_by="class", overlap_policy=s["overlap"],
                                counts=s.get("counts") or None)
    audit["left_out_by_class_filter"] = int(len(df) - len(known))
    audit["subset"] = subset
    audit["merged_source_splits"] = merged
    for split_name, per in (audit.get("counts_asked") or {}).items():
        for cls, n in per.items():
            got = audit["counts_drawn"][split_name][cls]
            if got < n:  # too few images (or patients that do not fit): said, and the run goes on
                print(f"split.counts: {split_name} has {got} {cls!r} images of the {n} asked "
                      "(not enough whole patients left)", file=sys.stderr)
    audit["configured_labels_absent"] = missing
    cols = ["image_id", "png", "label", "class", "target", "patient_id", "source_split", "split", "boxes", "mask_png",
            "width", "height"]
    write_csv(split_out, out[cols])
    write_json(audit_out, audit)
    return out
