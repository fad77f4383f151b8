"""Mask R-CNN opacity segmentation, torchvision backend: data, model, training, prediction.

Data comes from the COCO instance JSON of each split (written by :mod:`medrepro.detect.annotation`),
so the model trains on exactly the annotations that are published.  Each image is read as
grayscale, resized to ``input_size`` (square), equalised (:func:`medrepro.detect.preprocessing.equalize`,
the paper's equation 1 by default) and, for training, augmented together with its masks by
albumentations; target boxes are the tight boxes of the (augmented) masks.

Training follows the paper's Table 1 (``epochs`` x ``steps_per_epoch`` iterations of
``batch_size`` images); every epoch re-seeds from ``(seed, epoch)`` and ends with a checkpoint,
so an interrupted run resumes to the same weights.  Predictions are a COCO results list
(RLE masks, ``[x, y, w, h]`` boxes in the PNG's pixels, scores), the format the detectron2
backend writes too.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ..accel import Accel, describe, deterministic_setting, epoch_seed, from_train, log_line, seed_everything
from ..specs import ModelSpec, RunSpec, as_plain, model_spec
from .annotation import encode
from .dataset import LOSS_KEYS, DetectionSet, annotations_digest, collate, resume_fingerprint

log = logging.getLogger(__name__)
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
# ----------------------------------------------------------------------------- model
def build_maskrcnn(model: ModelSpec) -> nn.Module:
    """torchvision Mask R-CNN from ``model.detector`` settings (2 classes: background, opacity).

    ``backbone: resnet50`` with ``norm: frozen`` and the default widths (a 256-channel pyramid, a
    1,024-wide box head, four 256-channel mask convolutions) is exactly ``maskrcnn_resnet50_fpn``;
    lighter ResNets, a narrower pyramid and heads and trainable BatchNorm serve randomly
    initialised demo runs.  The mask predictor's transposed convolution has the mask head's last
    width (torchvision's 256 with its default head; detectron2 builds it so at every width): at
    torchvision's fixed 256 after a 64-channel head it took a third of a demo iteration on the CPU.
    ``last_stage: 4`` builds the pyramid on C2-C4 without the ResNet's fifth stage (the RoI heads
    read every level but the max-pooled one, as with C2-C5).
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import FrozenBatchNorm2d

    d = model.detector
    if d.backbone not in BACKBONES:
        raise ValueError(f"detector backbone {d.backbone!r}; expected one of {BACKBONES}")
    norm = nn.BatchNorm2d if d.norm == "batchnorm" else FrozenBatchNorm2d
    # returned_layers: torchvision's layer1-4 are C2-C5; the stages after the last one read are not built
    backbone = resnet_fpn_backbone(backbone_name=d.backbone, weights=None, norm_layer=norm,
                                   trainable_layers=d.trainable_layers,
                                   returned_layers=list(range(1, d.last_stage)))
    if d.fpn_channels != backbone.out_channels:  # a narrower pyramid (and with it RPN, RoIAlign, box head input)
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        backbone.fpn = FeaturePyramidNetwork([blk[0].in_channels for blk in backbone.fpn.inner_blocks],
                                             d.fpn_channels, extra_blocks=LastLevelMaxPool())
        backbone.out_channels = d.fpn_channels
    size = model.input_size[0]
    anchors = AnchorGenerator(tuple((int(a),) for a in d.anchor_sizes), ((0.5, 1.0, 2.0),) * len(d.anchor_sizes))
    ch = backbone.out_channels
    box_head = TwoMLPHead(ch * 7 * 7, d.box_head_size)
    mask_layers = tuple(d.mask_head_layers)
    return MaskRCNN(
        backbone, num_classes=None, min_size=size, max_size=size, rpn_anchor_generator=anchors,
        box_head=box_head, box_predictor=FastRCNNPredictor(d.box_head_size, 2),
        mask_head=MaskRCNNHeads(ch, mask_layers, 1),
        mask_predictor=MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], 2),
        rpn_pre_nms_top_n_train=d.rpn_pre_nms_top_n, rpn_pre_nms_top_n_test=d.rpn_pre_nms_top_n,
        rpn_post_nms_top_n_train=d.rpn_post_nms_top_n, rpn_post_nms_top_n_test=d.rpn_post_nms_top_n,
        rpn_batch_size_per_image=d.rpn_batch_size_per_image, box_batch_size_per_image=d.roi_batch_size_per_image,
        box_score_thresh=d.min_score, box_detections_per_img=d.max_detections)


def load_weights(model: nn.Module, path: str | Path) -> str:
    """Load a local checkpoint: a whole detection model (COCO Mask R-CNN; class-specific heads of
    another shape are skipped) or an ImageNet ResNet into the backbone.  Returns what was loaded."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("model", sd) if isinstance(sd, dict) else sd
    if any(k.startswith("backbone.body.") for k in sd):
        own = model.state_dict()
        keep = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(keep, strict=False)
        return f"detection model weights {Path(path).name} ({len(keep)} of {len(own)} tensors)"
    body = model.backbone.body
    own = body.state_dict()
    keep = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    if not keep:
        raise ValueError(f"{path}: no tensor matches the {type(body).__name__} backbone; expected an ImageNet "
                         f"ResNet or a torchvision Mask R-CNN state dict")
    body.load_state_dict(keep, strict=False)
    return f"ImageNet backbone weights {Path(path).name} ({len(keep)} of {len(own)} tensors)"


def model_summary(model: nn.Module, spec: ModelSpec, weights_note: str) -> pd.DataFrame:
    rows = []
    for name in ("backbone.body", "backbone.fpn", "rpn", "roi_heads.box_head", "roi_heads.box_predictor",
                 "roi_heads.mask_head", "roi_heads.mask_predictor"):
        m = model.get_submodule(name)
        rows.append({"layer": name, "type": type(m).__name__,
                     "params": sum(p.numel() for p in m.parameters()),
                     "trainable": sum(p.numel() for p in m.parameters() if p.requires_grad)})
    rows.append({"layer": "total", "type": f"MaskRCNN ({spec.detector.backbone}-FPN)",
                 "params": sum(p.numel() for p in model.parameters()),
                 "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)})
    df = pd.DataFrame(rows)
    df["initialisation"] = weights_note
    return df


# ----------------------------------------------------------------------------- training
def _val_loss(model, ds, accel: Accel, batch: int) -> float:
    """Summed Mask R-CNN loss on ``ds`` (training-mode heads, inference-mode BatchNorm, no update)."""
    if len(ds) == 0:
        return float("nan")
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    total = 0.0
    with torch.no_grad():
        for k in range(0, len(ds), batch):
            imgs, tgts = collate([ds[i] for i in range(k, min(k + batch, len(ds)))])
            losses = model(*_to(accel, imgs, tgts))
            total += float(sum(losses.values())) * len(imgs)
    return total / len(ds)


def _to(accel: Accel, imgs, tgts=None):
    """A batch's images (and targets) on the device; Mask R-CNN takes lists of rank-3 images,
    so channels-last does not apply."""
    imgs = [i.to(accel.device, non_blocking=accel.non_blocking) for i in imgs]
    if tgts is None:
        return (imgs,)
    return imgs, [{k: v.to(accel.device, non_blocking=accel.non_blocking) for k, v in t.items()} for t in tgts]


def train_step(model, opt, scaler, accel: Accel, imgs, tgts, clip: float | None = None, params=None) -> dict:
    """One training iteration: forward under autocast, scaled backward, whole-model gradient-norm
    clipping (unscaled first), optimizer and scaler steps; returns the loss terms (on the device)."""
    with accel.autocast():
        losses = model(*_to(accel, imgs, tgts))
    loss = sum(losses.values())
    opt.zero_grad()
    scaler.scale(loss).backward()
    if clip:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params if params is not None else
                                       [p for g in opt.param_groups for p in g["params"]], clip)
    scaler.step(opt)
    scaler.update()
    return losses


def build_optimizer(params: list, t) -> tuple[torch.optim.Optimizer, object]:
    """The optimizer of ``train.optimizer`` and its schedule: a linear warm-up over the first
    ``warmup_iterations`` iterations, lr * (it + 1) / warmup, stepped per iteration as in
    torchvision's detection reference (None without one); LambdaLR rather than its LinearLR, whose
    chained updates leave the lr a few ulps off the configured one after the warm-up
    (0.000999999999999997 for 0.001)."""
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    warmup = t.warmup_iterations
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: min(1.0, (it + 1) / warmup)) if warmup else None
    return opt, sched


def train_one_epoch(model, train_ds, batches, opt, sched, scaler, accel: Accel, t, params, label: str) -> dict:
    """One epoch over ``batches`` (lists of indices into ``train_ds``): the mean loss, the mean of
    each loss term, the lr of the last iteration and the seconds it took. Loss sums stay on the device (no
    host-GPU wait per iteration)."""
    model.train()
    t0, sums, lr = time.time(), dict.fromkeys(LOSS_KEYS, 0.0), t.lr
    bar = tqdm(batches, desc=label, file=sys.stderr, mininterval=5)
    for k, idx in enumerate(bar):
        lr = opt.param_groups[0]["lr"]  # this iteration's (the history's lr: the last one's)
        imgs, tgts = collate([train_ds[i] for i in idx])
        losses = train_step(model, opt, scaler, accel, imgs, tgts, t.clip_grad_norm, params)
        if sched is not None:
            sched.step()
        for key in LOSS_KEYS:
            sums[key] = sums[key] + losses[key].detach().double()
        if k % 20 == 0:
            bar.set_postfix(loss=f"{float(sum(losses.values()).detach()):.3f}", refresh=False)
    sums = {key: float(v) for key, v in sums.items()}
    steps = len(batches)
    return {"loss": sum(sums.values()) / steps, **{key: v / steps for key, v in sums.items()}, "lr": lr,
            "seconds": time.time() - t0}


def train_detector(train_coco: dict, val_coco: dict, spec: RunSpec, model_out, history_out, checkpoint=None,
                   weights: str | None = None, stop_after: int | None = None, accel: Accel | None = None,
                   data_digest: str = "") -> tuple[nn.Module, pd.DataFrame, str]:
    """Train per ``spec`` (the experiment's ``model``, ``train``, ``augment``, ``detect``); return
    (model, history, weights note).  ``stop_after`` ends after that many epochs (to test resuming);
    ``accel`` overrides the device settings of ``spec.train`` (tests force the GPU branches on
    the CPU with it); ``data_digest`` names the training data in the resume fingerprint
    (:mod:`medrepro.checkpoint`)."""
    from .. import checkpoint as ckpt

    t, d = spec.train, spec.detect
    size = spec.model.input_size[0]
    accel = accel or from_train(t, channels_last=False)
    seed_everything(t.seed, deterministic_setting(t.deterministic, accel, roi_align=True))
    print(log_line(accel), file=sys.stderr, flush=True)
    model = build_maskrcnn(spec.model).to(accel.device)
    note = load_weights(model, weights) if weights else "random initialisation (no pretrained weights configured)"
    classes = list(d.train_classes) if d.train_classes else None
    train_ds = DetectionSet(train_coco, size, d.equalization, spec.augment, t.seed, classes)
    val_ds = DetectionSet(val_coco, size, d.equalization, None, t.seed, classes)
    if len(train_ds) == 0:
        raise ValueError(f"no training image of classes {classes}")
    print(f"training on {len(train_ds)} images, validating on {len(val_ds)}", file=sys.stderr)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = build_optimizer(params, t)
    fp = resume_fingerprint(spec, weights, data_digest)
    scaler = accel.scaler()
    amp_scaler = scaler if accel.amp else None
    state = ckpt.resume(checkpoint, fp, "torchvision", model=model, optimizer=opt, scheduler=sched, scaler=amp_scaler,
                        map_location=accel.device)
    history, start, steps = state.history, state.epoch, t.steps_per_epoch
    for epoch in range(start, t.epochs):
        torch.manual_seed(epoch_seed(t.seed, epoch))
        gen = torch.Generator().manual_seed(epoch_seed(t.seed, epoch))
        train_ds.set_epoch_seed(epoch_seed(t.seed, epoch))
        batches = ckpt.epoch_batches(len(train_ds), steps, t.batch_size, gen)
        r = train_one_epoch(model, train_ds, batches, opt, sched, scaler, accel, t, params,
                            f"epoch {epoch + 1}/{t.epochs}")
        row = {"epoch": epoch + 1, **{k: r[k] for k in ("loss", *LOSS_KEYS)},
               "val_loss": _val_loss(model, val_ds, accel, t.batch_size), "lr": r["lr"],
               "seconds": r["seconds"], "iterations": (epoch + 1) * steps}
        if accel.amp:
            row["amp_scale"] = float(scaler.get_scale())
        history.append(row)
        print(f"epoch {epoch + 1}: loss {row['loss']:.4f} val_loss {row['val_loss']:.4f} "
              f"({row['seconds']:.0f} s, {steps / row['seconds']:.2f} it/s)", file=sys.stderr)
        if checkpoint:
            ckpt.save(checkpoint, fp, "torchvision", epoch, history, model, optimizer=opt, scheduler=sched,
                      scaler=amp_scaler)
        if stop_after is not None and epoch + 1 - start >= stop_after:
            break
    hist = pd.DataFrame(history)
    if model_out:
        ckpt.save_model(model_out, model, as_plain(spec.model), note, backend="torchvision",
                        runtime=describe(accel), experiment=spec.as_dict())
    if history_out:
        from ..io import write_csv

        write_csv(history_out, hist)
    return model, hist, note


def load_detector(path) -> nn.Module:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = build_maskrcnn(model_spec(ck["config"]))
    model.load_state_dict(ck["model"])
    return model.eval()


# ----------------------------------------------------------------------------- prediction
def predict_coco(model: nn.Module, coco: dict, spec: RunSpec, batch: int = 4, accel: Accel | None = None
                 ) -> list[dict]:
    """COCO results (RLE masks, boxes in the PNG's pixels, scores) for every image of ``coco``."""
    accel = accel or from_train(spec.train, channels_last=False)
    print(log_line(accel), file=sys.stderr, flush=True)
    model = model.to(accel.device).eval()
    size = spec.model.input_size[0]
    ds = DetectionSet(coco, size, spec.detect.equalization)
    info = {im["id"]: im for im in coco["images"]}
    out = []
    with torch.no_grad():
        for k in tqdm(range(0, len(ds), batch), desc="predict", file=sys.stderr, mininterval=5):
            idx = list(range(k, min(k + batch, len(ds))))
            with accel.autocast():
                res = model(*_to(accel, [ds[i][0] for i in idx]))
            for i, r in zip(idx, res):
                im = info[ds.ids[i]]
                h, w = im["height"], im["width"]
                if len(r["scores"]):
                    probs = torch.nn.functional.interpolate(r["masks"].float().cpu(), size=(h, w), mode="bilinear",
                                                            align_corners=False)[:, 0]
                    masks = (probs > 0.5).numpy().astype(np.uint8)
                sx, sy = w / size, h / size
                for j in range(len(r["scores"])):
                    x0, y0, x1, y1 = r["boxes"][j].cpu().tolist()
                    out.append({"image_id": im["id"], "category_id": 1, "score": round(float(r["scores"][j]), 5),
                                "bbox": [round(x0 * sx, 2), round(y0 * sy, 2), round((x1 - x0) * sx, 2),
                                         round((y1 - y0) * sy, 2)],
                                "segmentation": encode(masks[j])})
    return out


# ----------------------------------------------------------------------------- the backend interface
def train(annotations_dir, spec: RunSpec, model_out, history_out, summary_out, checkpoint=None,
          weights: str | None = None) -> None:
    """Train on ``annotations_dir``'s ``train.json`` (validation loss on ``val.json``); writes the
    model, its history and its summary.  The resume fingerprint covers the experiment and both
    annotation files, so a checkpoint of a run on other images is not resumed."""
    from .. import checkpoint as ckpt
    from ..accel import summary_rows
    from ..io import write_csv

    d = Path(annotations_dir)
    digest = annotations_digest(d)
    train_coco, val_coco = (json.loads((d / f"{s}.json").read_text()) for s in ("train", "val"))
    model, _, note = train_detector(train_coco, val_coco, spec, model_out, history_out, checkpoint, weights,
                                    data_digest=digest)
    summ = model_summary(model, spec.model, note)
    runtime = summary_rows(from_train(spec.train, channels_last=False), "type")
    write_csv(summary_out, pd.concat([summ, pd.DataFrame(runtime)], ignore_index=True))
    ckpt.finish(checkpoint)


def predict(model_path, coco: dict, spec: RunSpec, batch: int = 4) -> list[dict]:
    """COCO results of the trained model in ``model_path`` on ``coco``'s images."""
    return predict_coco(load_detector(model_path), coco, spec, batch)
