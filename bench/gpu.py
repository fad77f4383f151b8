"""GPU throughput of the project's own training and prediction code, in one run.

Measures, on the first CUDA device (the CPU where there is none, as a smoke run):

* **classifier training images/s** of ``config/full.yaml``'s ``tk_resnet50`` model (ResNet-50,
  224 px, its head), every weight trainable, through :func:`medrepro.classify.training.fit` on in-memory
  random images, with and without AMP and channels-last (the four :class:`medrepro.accel.Accel`
  combinations, alternating, median of ``--repeats``);
* **Mask R-CNN R50-FPN training images/s** of ``mr_exp2`` (1,024 px, its batch size) through
  :func:`medrepro.detect.torchvision_backend.train_detector` on synthetic PNGs + COCO masks, AMP off/on, the second
  epoch's time (the first warms cuDNN up); beside it the same model's bare training step on batches
  already on the device (``model step``: the ceiling without the project's in-process data path);
* **Mask R-CNN inference images/s** through :func:`medrepro.detect.torchvision_backend.predict_coco` (PNG masks
  back to the original size, RLE-encoded, as the workflow writes them);
* peak GPU memory of each row, and the device, torch, CUDA and cuDNN versions.

Construction (model, data set) is outside every timed region. Numbers are printed as a Markdown
table and, with ``--out``, written as JSON.

    python bench/gpu.py [--repeats 2] [--out gpu.json]
    python bench/gpu.py --tiny          # CPU smoke sizes (the test suite runs this)
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medrepro import accel as accel_mod
from medrepro.classify.models import build_model
from medrepro.classify.training import fit
from medrepro.config import load_config, schema_defaults
from medrepro.detect.annotation import encode
from medrepro.detect.dataset import DetectionSet, collate
from medrepro.detect.torchvision_backend import build_maskrcnn, predict_coco, train_detector, train_step
from medrepro.specs import model_spec, run_spec, train_spec

REPO = Path(__file__).resolve().parents[1]
# (amp, channels_last, deterministic): the four GPU switches at the project's default (deterministic
# algorithms on for classifiers), then the fastest of them without deterministic algorithms
VARIANTS = [(False, False, True), (True, False, True), (False, True, True), (True, True, True), (True, True, False)]


def full_config() -> dict:
    return load_config(REPO / "config", [REPO / "config" / "full.yaml"])


def make_accel(device: torch.device, amp: bool, channels_last: bool) -> accel_mod.Accel:
    gpu = device.type == "cuda"
    return accel_mod.Accel(device, amp=amp, channels_last=channels_last, pin_memory=gpu, non_blocking=gpu)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_second(step, warmup: int, iters: int, device) -> float:
    """``step()`` run ``warmup`` times untimed, then ``iters`` times timed (the device synchronised)."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return iters / (time.perf_counter() - t0)


def peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# ----------------------------------------------------------------------------- classifier
def classifier_run(spec: dict, n_classes: int, images: int, batch: int, epochs: int, acc,
                   deterministic: bool = True) -> float:
    """Images/s of ``fit`` over ``epochs`` epochs of ``images`` random images (one warm-up epoch first)."""
    size = spec["input_size"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(images, spec["channels"], *size, generator=g)
    y = torch.randint(0, n_classes, (images,), generator=g)
    train = torch.utils.data.TensorDataset(x, y)
    val = torch.utils.data.TensorDataset(x[:batch], y[:batch])
    model = build_model(model_spec(spec), n_classes)
    cfg = train_spec(schema_defaults(REPO / "config" / "schema.yaml", "train_spec", epochs=1, batch_size=batch, lr=1e-4,
                                     seed=0, deterministic=deterministic))
    fit(model, train, val, cfg, progress=False, accel=acc)  # warm-up: cuDNN plans, allocator
    sync(acc.device)
    peak_reset(acc.device)
    cfg = dataclasses.replace(cfg, epochs=epochs)  # the spec is frozen
    t0 = time.perf_counter()
    fit(model, train, val, cfg, progress=False, accel=acc)
    sync(acc.device)
    return epochs * images / (time.perf_counter() - t0)


def classifier_step_run(spec: dict, n_classes: int, batch: int, iters: int, acc) -> float:
    """Images/s of the bare training step (forward, backward, Adam) on one batch already on the device."""
    torch.manual_seed(0)
    model = acc.model(build_model(model_spec(spec), n_classes)).train()
    x = acc.batch(torch.rand(batch, spec["channels"], *spec["input_size"]))
    y = torch.randint(0, n_classes, (batch,), device=acc.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = acc.scaler()

    def step():
        with acc.autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return batch * steps_per_second(step, 3, iters, acc.device)


# ----------------------------------------------------------------------------- Mask R-CNN
def synthetic_coco(folder: Path, n: int, size: int, seed: int = 0) -> dict:
    """``n`` grayscale PNGs of ``size`` px with one to three elliptical opacities each, as COCO."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    images, anns = [], []
    for i in range(n):
        img = rng.normal(90, 20, (size, size))
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(0.2, 0.8, 2) * size
            ax, ay = rng.uniform(0.05, 0.15, 2) * size
            m = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1
            img[m] += 60
            x0, y0 = xx[m].min(), yy[m].min()
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "area": int(m.sum()), "segmentation": encode(m.astype(np.uint8)),
                         "bbox": [int(x0), int(y0), int(xx[m].max() - x0 + 1), int(yy[m].max() - y0 + 1)]})
        path = folder / f"{i}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, compress_level=1)
        images.append({"id": i + 1, "file_name": str(path), "width": size, "height": size,
                       "medrepro_class": "pneumonia"})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "opacity"}]}


def detector_train_run(exp: dict, coco: dict, iters: int, acc) -> float:
    """Images/s of ``train_detector``'s second epoch of ``iters`` iterations (no validation set)."""
    e = copy.deepcopy(exp)
    e["train"].update(epochs=2, steps_per_epoch=iters, warmup_iterations=0)
    empty = {"images": [], "annotations": [], "categories": coco["categories"]}
    _, hist, _ = train_detector(coco, empty, run_spec(e), None, None, accel=acc)
    return iters * e["train"]["batch_size"] / float(hist["seconds"].iloc[-1])


def detector_step_run(exp: dict, coco: dict, iters: int, acc) -> float:
    """Images/s of the bare training step (forward, backward, SGD) on batches already on the device."""
    torch.manual_seed(0)
    model = acc.model(build_maskrcnn(run_spec(exp).model)).train()
    size, bs = int(exp["model"]["input_size"][0]), exp["train"]["batch_size"]
    ds = DetectionSet(coco, size, exp["detect"]["equalization"])
    imgs, tgts = collate([ds[k % len(ds)] for k in range(bs)])
    imgs = [i.to(acc.device) for i in imgs]
    tgts = [{k: v.to(acc.device) for k, v in t.items()} for t in tgts]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    scaler = acc.scaler()
    return bs * steps_per_second(lambda: train_step(model, opt, scaler, acc, imgs, tgts, None, params), 2, iters,
                                 acc.device)


def detector_predict_run(exp: dict, coco: dict, acc) -> float:
    torch.manual_seed(0)
    spec = run_spec(exp)
    model = build_maskrcnn(spec.model).eval()
    predict_coco(model, {**coco, "images": coco["images"][:2]}, spec, accel=acc)  # warm-up
    sync(acc.device)
    t0 = time.perf_counter()
    predict_coco(model, coco, spec, accel=acc)
    sync(acc.device)
    return len(coco["images"]) / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- main
def measure(label: str, f, device, repeats: int, rows: list, **info) -> None:
    vals, peaks = [], []
    for _ in range(repeats):
        peak_reset(device)
        vals.append(f())
        peaks.append(peak_gib(device))
    row = {"measure": label, **info, "images_per_s": statistics.median(vals), "runs": vals,
           "peak_gib": max(peaks) if peaks[0] is not None else None}
    rows.append(row)
    print(f"  {label} {info}: {row['images_per_s']:.1f} images/s", file=sys.stderr, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--classifier-images", type=int, default=1024)
    ap.add_argument("--classifier-epochs", type=int, default=2)
    ap.add_argument("--classifier-batch", type=int, default=None, help="default: tk_resnet50's batch size")
    ap.add_argument("--classifier-step-iters", type=int, default=30)
    ap.add_argument("--detector-images", type=int, default=24)
    ap.add_argument("--detector-iters", type=int, default=10)
    ap.add_argument("--detector-batch", type=int, default=None, help="default: mr_exp2's batch size")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke sizes: 32/64 px, a few images")
    ap.add_argument("--skip", choices=["classifier", "detector"], action="append", default=[])
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    cfg = full_config()
    spec = copy.deepcopy(cfg["experiments"]["tk_resnet50"]["model"])
    spec["freeze"] = False  # every weight trains: the fine-tuning cost, the largest per image
    n_classes = len(cfg["experiments"]["tk_resnet50"]["classes"])
    cbatch = a.classifier_batch or cfg["experiments"]["tk_resnet50"]["train"]["batch_size"]
    exp = copy.deepcopy(cfg["experiments"]["mr_exp2"])
    exp["detect"]["train_classes"] = None
    if a.tiny:
        spec["input_size"] = [32, 32]
        a.classifier_images, a.classifier_epochs, a.classifier_step_iters, cbatch = 8, 1, 1, 4
        exp["model"]["input_size"] = [64, 64]
        exp["model"]["detector"].update(rpn_pre_nms_top_n=50, rpn_post_nms_top_n=20, max_detections=5)
        a.detector_images, a.detector_iters, a.repeats = 2, 1, 1
        exp["train"]["batch_size"] = 2
    if a.detector_batch:
        exp["train"]["batch_size"] = a.detector_batch
    torch.backends.cuda.matmul.allow_tf32 = False  # the project leaves TF32 off (torch's default)
    run = accel_mod.describe(make_accel(device, False, False))
    header = {k: run[k] for k in ("device", "gpu", "torch", "cuda", "cudnn", "threads", "python")}
    import torchvision
    header["torchvision"] = torchvision.__version__
    print("running on " + ", ".join(f"{k}={v}" for k, v in header.items()), file=sys.stderr, flush=True)
    rows: list[dict] = []
    if "classifier" not in a.skip:
        res: dict = {v: [] for v in VARIANTS}
        peaks: dict = {v: [] for v in VARIANTS}
        for _ in range(a.repeats):  # alternate the variants, so drifts in clocks hit them alike
            for v in VARIANTS:
                amp, cl, det = v
                peak_reset(device)
                res[v].append(classifier_run(spec, n_classes, a.classifier_images, cbatch, a.classifier_epochs,
                                             make_accel(device, amp, cl), det))
                peaks[v].append(peak_gib(device))
        model = f"resnet50 {spec['input_size'][0]} px"
        for (amp, cl, det), vals in res.items():
            rows.append({"measure": "classifier training (fit)" + ("" if det else ", not deterministic"),
                         "model": model, "batch": cbatch, "amp": amp, "channels_last": cl,
                         "images_per_s": statistics.median(vals), "runs": vals,
                         "peak_gib": max(peaks[(amp, cl, det)]) if peaks[(amp, cl, det)][0] is not None else None})
            print(f"  classifier amp={amp} channels_last={cl} deterministic={det}: "
                  f"{rows[-1]['images_per_s']:.1f} images/s", file=sys.stderr, flush=True)
        for amp, cl in ((False, False), (True, True)):
            acc = make_accel(device, amp, cl)
            measure("classifier training (model step)", lambda: classifier_step_run(spec, n_classes, cbatch,
                    a.classifier_step_iters, acc), device, a.repeats, rows, model=model, batch=cbatch, amp=amp,
                    channels_last=cl)
    if "detector" not in a.skip:
        size = int(exp["model"]["input_size"][0])
        model = f"maskrcnn {exp['model']['detector']['backbone']}-fpn {size} px"
        bs = exp["train"]["batch_size"]
        with tempfile.TemporaryDirectory() as d:
            coco = synthetic_coco(Path(d), a.detector_images, size)
            for amp in (False, True):
                acc = make_accel(device, amp, False)
                measure("Mask R-CNN training (train_detector)",
                        lambda: detector_train_run(exp, coco, a.detector_iters, acc),
                        device, a.repeats, rows, model=model, batch=bs, amp=amp)
                measure("Mask R-CNN training (model step)", lambda: detector_step_run(exp, coco, a.detector_iters, acc),
                        device, a.repeats, rows, model=model, batch=bs, amp=amp)
                measure("Mask R-CNN inference (predict_coco)", lambda: detector_predict_run(exp, coco, acc),
                        device, a.repeats, rows, model=model, batch=4, amp=amp)
    print(f"\n{header['device']} ({header['gpu'] or 'no GPU'}), torch {header['torch']}, CUDA {header['cuda']}, "
          f"cuDNN {header['cudnn']}, median of {a.repeats}\n")
    print("| measure | model | batch | AMP | channels-last | images/s | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        cl = {True: "yes", False: "no", None: "-"}[r.get("channels_last")]
        print(f"| {r['measure']} | {r['model']} | {r['batch']} | {'yes' if r['amp'] else 'no'} | {cl} | "
              f"{r['images_per_s']:.1f} | {peak} |")
    if a.out:
        a.out.write_text(json.dumps({"run": header, "rows": rows}, indent=1))
    return {"run": header, "rows": rows}


if __name__ == "__main__":
    main()
