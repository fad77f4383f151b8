"""Mask R-CNN training and inference throughput, per backend, timed the same way.

Synthesizes a small RSNA stand-in, converts and annotates it as the workflow does, then, for each
backend available here (torchvision always; detectron2 where it is installed), in a fresh process
per backend and repeat (so the peak memory is that backend's):

* builds the demo's ``mr_exp2`` model (config/config.yaml: ResNet-18-FPN with a 64-channel
  pyramid, 96 px, batch 4, its SGD, whole-model gradient clipping), its optimizer and its data,
  **outside** the timed region;
* runs ``--warmup`` untimed training iterations, then times ``--iters`` (the backend's own step:
  :func:`medrepro.detect.torchvision_backend.train_step` for torchvision, detectron2's ``SimpleTrainer.run_step``);
* predicts the test images once untimed, then times a second pass
  (:func:`medrepro.detect.torchvision_backend.predict_coco`,
  :func:`medrepro.detect.detectron2_backend.predict_with`: masks back to the PNG's size, RLE-encoded);
* reports the process's peak resident memory.

Backends alternate ``--repeats`` times; the table gives medians.

    python bench/maskrcnn.py [--iters 20] [--warmup 3] [--repeats 2] [--size N] [--backbone resnet18]
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from medrepro import datasets, prepare
from medrepro.config import load_config
from medrepro.convert import convert_manifest
from medrepro.detect import detectron2_backend
from medrepro.detect import steps as detect_steps

REPO = Path(__file__).resolve().parents[1]


def _coco(ann: Path, split: str) -> dict:
    return json.loads((ann / f"{split}.json").read_text())


def torchvision_run(exp, ann, iters, warmup) -> dict:
    from medrepro.accel import from_train
    from medrepro.detect.dataset import DetectionSet, collate
    from medrepro.detect.torchvision_backend import build_maskrcnn, predict_coco, train_step
    from medrepro.specs import run_spec

    spec = run_spec(exp)
    t = exp["train"]
    torch.manual_seed(0)
    acc = from_train(spec.train)
    model = build_maskrcnn(spec.model).to(acc.device).train()
    ds = DetectionSet(_coco(ann, "train"), int(exp["model"]["input_size"][0]), exp["detect"]["equalization"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])
    scaler = acc.scaler()
    bs = t["batch_size"]
    batches = ([(k * bs + j) % len(ds) for j in range(bs)] for k in itertools.count())
    for k in range(warmup + iters):
        if k == warmup:
            t0 = time.perf_counter()
        imgs, tgts = collate([ds[i] for i in next(batches)])
        train_step(model, opt, scaler, acc, imgs, tgts, t["clip_grad_norm"], params)
    it_s = iters / (time.perf_counter() - t0)
    test = _coco(ann, "test")
    predict_coco(model, test, spec, accel=acc)  # warm-up
    t0 = time.perf_counter()
    predict_coco(model, test, spec, accel=acc)
    return {"it_s": it_s, "infer_images_s": len(test["images"]) / (time.perf_counter() - t0)}


def detectron2_run(exp, ann, iters, warmup) -> dict:
    from detectron2.engine import SimpleTrainer
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    from medrepro.detect.dataset import DetectionSet
    from medrepro.specs import run_spec

    spec = run_spec(exp)
    t = exp["train"]
    torch.manual_seed(0)
    cfg = detectron2_backend.config(spec)
    model = detectron2_backend.build(cfg, spec).train()
    ds = DetectionSet(_coco(ann, "train"), int(exp["model"]["input_size"][0]), exp["detect"]["equalization"])
    opt = build_optimizer(cfg, model)
    if t["clip_grad_norm"]:
        detectron2_backend.clip_whole_model(opt, float(t["clip_grad_norm"]))
    bs = t["batch_size"]
    data = ([detectron2_backend._item(ds, (k * bs + j) % len(ds)) for j in range(bs)] for k in itertools.count())
    trainer = SimpleTrainer(model, data, opt)
    with EventStorage(0) as storage:
        trainer.storage = storage
        for k in range(warmup + iters):
            if k == warmup:
                t0 = time.perf_counter()
            trainer.iter = k
            trainer.run_step()
            storage.iter = k + 1
    it_s = iters / (time.perf_counter() - t0)
    test = _coco(ann, "test")
    detectron2_backend.predict_with(model, test, spec)  # warm-up
    t0 = time.perf_counter()
    detectron2_backend.predict_with(model, test, spec)
    return {"it_s": it_s, "infer_images_s": len(test["images"]) / (time.perf_counter() - t0)}


def child(a) -> None:
    """One backend, one repeat, in this process: prints a JSON line."""
    torch.set_num_threads(a.threads)
    exp = json.loads(Path(a.experiment).read_text())
    run = {"torchvision": torchvision_run, "detectron2": detectron2_run}[a.child]
    out = run(exp, Path(a.annotations), a.iters, a.warmup)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=None, help="input size (default: the demo's)")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=["torchvision", "detectron2"], help=argparse.SUPPRESS)
    ap.add_argument("--experiment", help=argparse.SUPPRESS)
    ap.add_argument("--annotations", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)
    torch.set_num_threads(a.threads)
    cfg = load_config(REPO / "config")
    exp = copy.deepcopy(cfg["experiments"]["mr_exp2"])
    if a.size:
        exp["model"]["input_size"] = [a.size, a.size]
    a.size = int(exp["model"]["input_size"][0])
    exp["model"]["detector"]["backbone"] = a.backbone
    exp["subset"] = {"per_class": {"healthy": 20, "pneumonia": 20}, "seed": 0}
    exp["train"]["allow_cpu"] = True
    backends = ["torchvision"] + (["detectron2"] if detectron2_backend.available() else [])
    res: dict[str, list] = {k: [] for k in backends}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        datasets.rsna.synthesize(tmp / "raw", 1, n_train=48, positive_fraction=0.6, image_size=512,
                                 difficulty=0.0, threads=a.threads)
        conv, _ = convert_manifest(datasets.rsna.ingest(tmp / "raw").manifest, tmp / "png", 1, 512, a.threads)
        conv.to_csv(tmp / "conv.csv", index=False)
        prepare.split(tmp / "conv.csv", exp, tmp / "split.csv", tmp / "audit.json")
        detect_steps.annotate(tmp / "split.csv", exp["detect"]["mask_shape"], tmp / "ann")
        (tmp / "exp.json").write_text(json.dumps(exp))
        for _ in range(a.repeats):
            for k in backends:
                r = subprocess.run([sys.executable, __file__, "--child", k, "--experiment", str(tmp / "exp.json"),
                                    "--annotations", str(tmp / "ann"), "--iters", str(a.iters), "--warmup",
                                    str(a.warmup), "--threads", str(a.threads)], capture_output=True, text=True)
                if r.returncode:
                    raise SystemExit(f"{k} failed:\n{r.stderr[-3000:]}")
                res[k].append(json.loads(r.stdout.strip().splitlines()[-1]))
        n_test = len(_coco(tmp / "ann", "test")["images"])
    bs = exp["train"]["batch_size"]
    print(f"Mask R-CNN {a.backbone}-FPN, {a.size} px, batch {bs}, {a.threads} threads, {a.iters} timed iterations "
          f"after {a.warmup}, inference on {n_test} images; median of {a.repeats}, one process per run")
    print("| backend | training iterations/s | training images/s | inference images/s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for k, v in res.items():
        it = statistics.median(x["it_s"] for x in v)
        print(f"| {k} | {it:.2f} | {it * bs:.1f} | {statistics.median(x['infer_images_s'] for x in v):.1f} | "
              f"{max(x['peak_rss_mib'] for x in v):.0f} |")


if __name__ == "__main__":
    main()
