"""Training throughput with the real loader against the same model fed in-memory tensors.

Synthesizes a small Kermany stand-in, converts it, and trains the demo's cnn_kermany model
(config/config.yaml) for ``--epochs`` epochs three ways, alternately, in one run:

* loader + augmentation: :class:`medrepro.data.ImageTable` with the experiment's
  albumentations pipeline (what the ``train`` rule does);
* loader: the same table without augmentation;
* tensors: the same images, pre-decoded into one tensor (:class:`~torch.utils.data.TensorDataset`).

    python bench/loader.py [--images 320] [--epochs 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from medrepro import prepare
from medrepro.classify.models import build_model
from medrepro.classify.training import fit
from medrepro.config import load_config, schema_defaults
from medrepro.data import ImageTable, build_augmentation
from medrepro.io import read_csv
from medrepro.specs import model_spec, train_spec

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    cfg = load_config(REPO / "config")
    exp = cfg["experiments"]["cnn_kermany"]
    n = args.images
    counts = {"train": {"NORMAL": n // 3, "PNEUMONIA": n - n // 3}, "test": {"NORMAL": 4, "PNEUMONIA": 4}}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        prepare.synthesize("kermany", d / "raw", {"counts": counts, "size_scale": 0.12}, 0, threads=2)
        prepare.ingest("kermany", d / "raw", d / "m.csv", d / "r.csv", 2)
        prepare.convert(d / "m.csv", d / "png", d / "c.csv", d / "cr.csv", 1, 256, 2)
        table = read_csv(d / "c.csv").assign(target=lambda t: (t["label"] == "PNEUMONIA").astype(int))
        table = table[table["source_split"] == "train"]
        size, ch = tuple(exp["model"]["input_size"]), 1
        plain = ImageTable(table, size, ch)
        x = torch.stack([plain[i][0] for i in range(len(plain))])
        y = torch.tensor(plain.targets)
        variants = {
            "loader + augmentation": ImageTable(table, size, ch, build_augmentation(exp["augment"], 0)),
            "loader": plain,
            "tensors": TensorDataset(x, y),
        }
        cfg_t = train_spec(schema_defaults(REPO / "config" / "schema.yaml", "train_spec", epochs=args.epochs,
                                          batch_size=32, seed=0, device="cpu"))
        times = {k: [] for k in variants}
        for _ in range(args.repeats):
            for name, ds in variants.items():
                torch.manual_seed(0)
                model = build_model(model_spec(exp["model"]), 1)
                t0 = time.perf_counter()
                fit(model, ds, TensorDataset(x[:8], y[:8]), cfg_t, progress=False)
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    imgs = len(table) * args.epochs
    print(f"cnn_kermany model, {len(table)} images x {args.epochs} epochs, {size[0]}x{size[1]} px, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeats}")
    for k, v in med.items():
        print(f"  {k:22s} {imgs / v:7.1f} images/s  ({v:.2f} s)")
    print(f"  loader cost vs tensors: {100 * (med['loader'] / med['tensors'] - 1):+.1f}% "
          f"(with augmentation: {100 * (med['loader + augmentation'] / med['tensors'] - 1):+.1f}%)")


if __name__ == "__main__":
    main()
