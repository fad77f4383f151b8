"""Mask R-CNN training iterations/s and inference images/s, per backend, in one table.

Synthesizes a small RSNA stand-in, converts and annotates it as the workflow does, then, for
each backend available here (torchvision always; detectron2 where it is installed), trains the
demo's ``mr_exp2`` model (config/config.yaml: ResNet-18-FPN, 128 px, batch 4) for ``--iters``
iterations after ``--warmup`` untimed ones and predicts the test images, alternating backends
``--repeats`` times.

    python bench/maskrcnn.py [--iters 20] [--warmup 3] [--repeats 2] [--size 128] [--backbone resnet18]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from medrepro import datasets, detect_pipeline, detectron2_backend, pipeline
from medrepro.config import load_config
from medrepro.convert import convert_manifest
from medrepro.detection import DetectionSet, build_maskrcnn, collate, predict_coco

REPO = Path(__file__).resolve().parents[1]


def torchvision_run(exp, ann, iters, warmup):
    train = json.loads((ann / "train.json").read_text())
    test = json.loads((ann / "test.json").read_text())
    size = exp["model"]["input_size"][0]
    torch.manual_seed(0)
    model = build_maskrcnn(exp["model"])
    ds = DetectionSet(train, size, exp["detect"]["equalization"])
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    model.train()
    bs = exp["train"]["batch_size"]
    for k in range(warmup + iters):
        if k == warmup:
            t0 = time.perf_counter()
        imgs, tgts = collate([ds[(k * bs + j) % len(ds)] for j in range(bs)])
        loss = sum(model(list(imgs), list(tgts)).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    it_s = iters / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    predict_coco(model, test, exp)
    return it_s, len(test["images"]) / (time.perf_counter() - t0)


def detectron2_run(exp, ann, iters, warmup, tmp):
    e = copy.deepcopy(exp)
    e["model"]["detector"]["backend"] = "detectron2"
    e["train"].update(epochs=1, steps_per_epoch=warmup + iters, warmup_iterations=0)
    t0 = time.perf_counter()
    detect_pipeline.train(ann, e, tmp / "d2.pt", tmp / "d2h.csv", tmp / "d2s.csv")
    # the history's per-epoch time includes the warm-up iterations: time the whole run instead
    it_s = (warmup + iters) / (time.perf_counter() - t0)
    test = json.loads((ann / "test.json").read_text())
    t0 = time.perf_counter()
    detectron2_backend.predict(tmp / "d2.pt", test, e)
    return it_s, len(test["images"]) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(REPO / "config" / "config.yaml", REPO / "config" / "schema.yaml")
    exp = copy.deepcopy(cfg["experiments"]["mr_exp2"])
    exp["model"]["input_size"] = [a.size, a.size]
    exp["model"]["detector"]["backbone"] = a.backbone
    exp["subset"] = {"per_class": {"healthy": 20, "pneumonia": 20}, "seed": 0}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        datasets.rsna.synthesize(tmp / "raw", 1, n_train=48, positive_fraction=0.6, image_size=512,
                                 difficulty=0.0, threads=a.threads)
        conv, _ = convert_manifest(datasets.rsna.ingest(tmp / "raw").manifest, tmp / "png", 1, 512, a.threads)
        conv.to_csv(tmp / "conv.csv", index=False)
        pipeline.split(tmp / "conv.csv", exp, tmp / "split.csv", tmp / "audit.json")
        detect_pipeline.annotate(tmp / "split.csv", exp, tmp / "ann")
        backends = {"torchvision": lambda: torchvision_run(exp, tmp / "ann", a.iters, a.warmup)}
        if detectron2_backend.available():
            backends["detectron2"] = lambda: detectron2_run(exp, tmp / "ann", a.iters, a.warmup, tmp)
        res: dict[str, list] = {k: [] for k in backends}
        for _ in range(a.repeats):
            for k, f in backends.items():
                res[k].append(f())
    print(f"Mask R-CNN {a.backbone}-FPN, {a.size} px, batch {exp['train']['batch_size']}, "
          f"{torch.get_num_threads()} threads, median of {a.repeats}")
    print("| backend | training iterations/s | inference images/s |")
    print("|---|---|---|")
    for k, v in res.items():
        print(f"| {k} | {statistics.median(x[0] for x in v):.2f} | {statistics.median(x[1] for x in v):.1f} |")


if __name__ == "__main__":
    main()
