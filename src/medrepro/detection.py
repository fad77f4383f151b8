"""Mask R-CNN opacity segmentation, torchvision backend: data, model, training, prediction.

Data comes from the COCO instance JSON of each split (written by :mod:`medrepro.annotation`),
so the model trains on exactly the annotations that are published.  Each image is read as
grayscale, resized to ``input_size`` (square), equalised (:func:`medrepro.preprocessing.equalize`,
the paper's equation 1 by default) and, for training, augmented together with its masks by
albumentations; target boxes are the tight boxes of the (augmented) masks.

Training follows the paper's Table 1 (``epochs`` x ``steps_per_epoch`` iterations of
``batch_size`` images); every epoch re-seeds from ``(seed, epoch)`` and ends with a checkpoint,
so an interrupted run resumes to the same weights.  Predictions are a COCO results list
(RLE masks, ``[x, y, w, h]`` boxes in the PNG's pixels, scores), the format the detectron2
backend writes too.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from .accel import Accel, describe, from_train, log_line
from .annotation import decode, encode
from .io import atomic_path
from .preprocessing import detection_augmentation, equalize
from .training import deterministic_setting, seed_everything

log = logging.getLogger(__name__)
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


# ----------------------------------------------------------------------------- data
class DetectionSet(torch.utils.data.Dataset):
    """Images and instance masks of one COCO JSON, resized and equalised once, kept in memory."""

    def __init__(self, coco: dict, size: int, equalization: str = "global", augment: list | None = None,
                 seed: int = 0, classes: list[str] | None = None):
        self.size, self.augment_cfg, self.seed = size, augment or [], seed
        anns: dict[int, list] = {}
        for a in coco["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        self.images, self.masks, self.ids = [], [], []
        for im in coco["images"]:
            a = anns.get(im["id"], [])
            if classes and im.get("medrepro_class") not in classes:
                continue
            img = Image.open(im["file_name"]).convert("L")
            if img.size != (im["width"], im["height"]):
                raise ValueError(f"{im['file_name']}: size {img.size} differs from the annotation's "
                                 f"{(im['width'], im['height'])}")
            img = np.asarray(img.resize((size, size), Image.BILINEAR))
            self.images.append(equalize(img, equalization))
            ms = [np.asarray(Image.fromarray(decode(x["segmentation"]) * 255).resize((size, size), Image.NEAREST)) > 127
                  for x in a]
            self.masks.append(np.stack(ms).astype(np.uint8) if ms else np.zeros((0, size, size), np.uint8))
            self.ids.append(im["id"])
        self.transform = None
        self.set_epoch_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch_seed(self, seed: int) -> None:
        self.transform = detection_augmentation(self.augment_cfg, seed) if self.augment_cfg else None

    def __getitem__(self, i: int):
        img, masks = self.images[i], self.masks[i]
        if self.transform is not None and len(masks):
            from torchvision.ops import masks_to_boxes

            boxes = masks_to_boxes(torch.from_numpy(masks)).numpy()
            coco = [[b[0], b[1], b[2] - b[0] + 1, b[3] - b[1] + 1] for b in boxes]
            out = self.transform(image=img, masks=list(masks), bboxes=coco, labels=list(range(len(masks))))
            keep = [int(k) for k in out["labels"]]
            img = out["image"]
            masks = np.stack([np.asarray(out["masks"][k]) for k in keep]).astype(np.uint8) if keep else masks[:0]
        elif self.transform is not None:
            img = self.transform(image=img, masks=[], bboxes=[], labels=[])["image"]
        return to_tensor(img), target(masks)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) grayscale -> float (3, H, W) in [0, 1] (the three-channel input Mask R-CNN takes)."""
    t = torch.from_numpy(np.ascontiguousarray(img)).float().div_(255)
    return t.unsqueeze(0).expand(3, -1, -1).contiguous()


def target(masks: np.ndarray) -> dict:
    from torchvision.ops import masks_to_boxes

    m = torch.from_numpy(np.ascontiguousarray(masks)).to(torch.uint8)
    m = m[m.flatten(1).any(1).bool()] if len(m) else m
    boxes = masks_to_boxes(m).float() if len(m) else torch.zeros((0, 4))
    if len(boxes):
        boxes[:, 2:] += 1  # pixel edges: a mask covering columns x0..x1 spans [x0, x1 + 1)
    return {"boxes": boxes, "labels": torch.ones(len(m), dtype=torch.int64), "masks": m}


def collate(batch):
    return tuple(zip(*batch))


# ----------------------------------------------------------------------------- model
def build_maskrcnn(cfg: dict) -> nn.Module:
    """torchvision Mask R-CNN from ``model.detector`` settings (2 classes: background, opacity).

    ``backbone: resnet50`` with ``norm: frozen`` and the default widths (a 256-channel pyramid, a
    1,024-wide box head, four 256-channel mask convolutions) is exactly ``maskrcnn_resnet50_fpn``;
    lighter ResNets, a narrower pyramid and heads and trainable BatchNorm serve randomly
    initialised demo runs.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import FrozenBatchNorm2d

    d = cfg["detector"]
    if d["backbone"] not in BACKBONES:
        raise ValueError(f"detector backbone {d['backbone']!r}; expected one of {BACKBONES}")
    norm = nn.BatchNorm2d if d["norm"] == "batchnorm" else FrozenBatchNorm2d
    backbone = resnet_fpn_backbone(backbone_name=d["backbone"], weights=None, norm_layer=norm,
                                   trainable_layers=d["trainable_layers"])
    if d["fpn_channels"] != backbone.out_channels:  # a narrower pyramid (and with it RPN, RoIAlign, box head input)
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        backbone.fpn = FeaturePyramidNetwork([blk[0].in_channels for blk in backbone.fpn.inner_blocks],
                                             d["fpn_channels"], extra_blocks=LastLevelMaxPool())
        backbone.out_channels = d["fpn_channels"]
    size = int(cfg["input_size"][0])
    anchors = AnchorGenerator(tuple((int(a),) for a in d["anchor_sizes"]), ((0.5, 1.0, 2.0),) * len(d["anchor_sizes"]))
    ch = backbone.out_channels
    box_head = TwoMLPHead(ch * 7 * 7, d["box_head_size"])
    mask_layers = tuple(d["mask_head_layers"])
    return MaskRCNN(
        backbone, num_classes=None, min_size=size, max_size=size, rpn_anchor_generator=anchors,
        box_head=box_head, box_predictor=FastRCNNPredictor(d["box_head_size"], 2),
        mask_head=MaskRCNNHeads(ch, mask_layers, 1), mask_predictor=MaskRCNNPredictor(mask_layers[-1], 256, 2),
        rpn_pre_nms_top_n_train=d["rpn_pre_nms_top_n"], rpn_pre_nms_top_n_test=d["rpn_pre_nms_top_n"],
        rpn_post_nms_top_n_train=d["rpn_post_nms_top_n"], rpn_post_nms_top_n_test=d["rpn_post_nms_top_n"],
        rpn_batch_size_per_image=d["rpn_batch_size_per_image"], box_batch_size_per_image=d["roi_batch_size_per_image"],
        box_score_thresh=d["min_score"], box_detections_per_img=d["max_detections"])


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


def model_summary(model: nn.Module, cfg: dict, weights_note: str) -> pd.DataFrame:
    rows = []
    for name in ("backbone.body", "backbone.fpn", "rpn", "roi_heads.box_head", "roi_heads.box_predictor",
                 "roi_heads.mask_head", "roi_heads.mask_predictor"):
        m = model.get_submodule(name)
        rows.append({"layer": name, "type": type(m).__name__,
                     "params": sum(p.numel() for p in m.parameters()),
                     "trainable": sum(p.numel() for p in m.parameters() if p.requires_grad)})
    rows.append({"layer": "total", "type": f"MaskRCNN ({cfg['detector']['backbone']}-FPN)",
                 "params": sum(p.numel() for p in model.parameters()),
                 "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)})
    df = pd.DataFrame(rows)
    df["initialisation"] = weights_note
    return df


# ----------------------------------------------------------------------------- training
def _fingerprint(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _batches(n: int, steps: int, batch: int, gen: torch.Generator) -> list[list[int]]:
    """``steps`` batches drawn without replacement, reshuffled each pass over the data."""
    order: list[int] = []
    while len(order) < steps * batch:
        order += torch.randperm(n, generator=gen).tolist()
    return [order[k * batch:(k + 1) * batch] for k in range(steps)]


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


def train_detector(train_coco: dict, val_coco: dict, cfg: dict, model_out, history_out, checkpoint=None,
                   weights: str | None = None, stop_after: int | None = None, accel: Accel | None = None,
                   data_digest: str = "") -> tuple[nn.Module, pd.DataFrame, str]:
    """Train per ``cfg`` (the experiment: ``model``, ``train``, ``augment``, ``detect``); return
    (model, history, weights note).  ``stop_after`` ends after that many epochs (to test resuming);
    ``accel`` overrides the device settings of ``cfg['train']`` (tests force the GPU branches on
    the CPU with it); ``data_digest`` names the training data in the resume fingerprint."""
    t, d = cfg["train"], cfg["detect"]
    size = int(cfg["model"]["input_size"][0])
    accel = accel or from_train(t)
    seed_everything(t["seed"], deterministic_setting(t.get("deterministic", "auto"), accel, roi_align=True))
    device = accel.device
    print(log_line(accel), file=sys.stderr, flush=True)
    model = build_maskrcnn(cfg["model"]).to(device)
    note = load_weights(model, weights) if weights else "random initialisation (no pretrained weights configured)"
    classes = d.get("train_classes")
    train_ds = DetectionSet(train_coco, size, d["equalization"], cfg.get("augment"), t["seed"], classes)
    val_ds = DetectionSet(val_coco, size, d["equalization"], None, t["seed"], classes)
    if len(train_ds) == 0:
        raise ValueError(f"no training image of classes {classes}")
    print(f"training on {len(train_ds)} images, validating on {len(val_ds)}", file=sys.stderr)
    params = [p for p in model.parameters() if p.requires_grad]
    if t["optimizer"] == "sgd":
        opt = torch.optim.SGD(params, lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])
    else:
        opt = torch.optim.Adam(params, lr=t["lr"], weight_decay=t["weight_decay"])
    fp = _fingerprint({k: cfg[k] for k in ("model", "train", "augment", "detect") if k in cfg}
                      | {"w": note, "data": data_digest})
    history: list[dict] = []
    start = 0
    scaler = accel.scaler()
    if checkpoint and Path(checkpoint).is_file():
        ck = torch.load(checkpoint, map_location=device, weights_only=False)
        if ck.get("fingerprint") == fp:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            if accel.amp and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            history, start = ck["history"], ck["epoch"] + 1
            print(f"resuming from epoch {start} ({checkpoint})", file=sys.stderr)
        else:
            print(f"ignoring {checkpoint}: written for another config, weights or data", file=sys.stderr)
    steps, batch = t["steps_per_epoch"], t["batch_size"]
    warmup = t["warmup_iterations"]
    for epoch in range(start, t["epochs"]):
        torch.manual_seed(t["seed"] * 1000 + epoch)
        gen = torch.Generator().manual_seed(t["seed"] * 1000 + epoch)
        train_ds.set_epoch_seed(t["seed"] * 1000 + epoch)
        model.train()
        t0, sums = time.time(), dict.fromkeys(LOSS_KEYS, 0.0)
        bar = tqdm(_batches(len(train_ds), steps, batch, gen), desc=f"epoch {epoch + 1}/{t['epochs']}",
                   file=sys.stderr, mininterval=5)
        for k, idx in enumerate(bar):
            it = epoch * steps + k
            for g in opt.param_groups:
                g["lr"] = t["lr"] * min(1.0, (it + 1) / warmup) if warmup else t["lr"]
            imgs, tgts = collate([train_ds[i] for i in idx])
            losses = train_step(model, opt, scaler, accel, imgs, tgts, t["clip_grad_norm"], params)
            loss = sum(losses.values())
            for key in LOSS_KEYS:  # summed on the device: no host-GPU wait per iteration
                sums[key] = sums[key] + losses[key].detach().double()
            if k % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        sums = {key: float(v) for key, v in sums.items()}
        row = {"epoch": epoch + 1, "loss": sum(sums.values()) / steps,
               **{key: v / steps for key, v in sums.items()},
               "val_loss": _val_loss(model, val_ds, accel, batch), "lr": opt.param_groups[0]["lr"],
               "seconds": time.time() - t0, "iterations": (epoch + 1) * steps}
        if accel.amp:
            row["amp_scale"] = float(scaler.get_scale())
        history.append(row)
        print(f"epoch {epoch + 1}: loss {row['loss']:.4f} val_loss {row['val_loss']:.4f} "
              f"({row['seconds']:.0f} s, {steps / row['seconds']:.2f} it/s)", file=sys.stderr)
        if checkpoint:
            with atomic_path(checkpoint) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
                            "scaler": scaler.state_dict() if accel.amp else None, "epoch": epoch,
                            "fingerprint": fp}, tmp)
        if stop_after is not None and epoch + 1 - start >= stop_after:
            break
    hist = pd.DataFrame(history)
    if model_out:
        with atomic_path(model_out) as tmp:
            torch.save({"model": model.state_dict(), "config": cfg["model"], "weights": note,
                        "runtime": describe(accel)}, tmp)
    if history_out:
        from .io import write_csv

        write_csv(history_out, hist)
    return model, hist, note


def load_detector(path) -> nn.Module:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = build_maskrcnn(ck["config"])
    model.load_state_dict(ck["model"])
    return model.eval()


# ----------------------------------------------------------------------------- prediction
def predict_coco(model: nn.Module, coco: dict, cfg: dict, batch: int = 4, accel: Accel | None = None) -> list[dict]:
    """COCO results (RLE masks, boxes in the PNG's pixels, scores) for every image of ``coco``."""
    accel = accel or from_train(cfg["train"])
    print(log_line(accel), file=sys.stderr, flush=True)
    model = model.to(accel.device).eval()
    size = int(cfg["model"]["input_size"][0])
    ds = DetectionSet(coco, size, cfg["detect"]["equalization"])
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


def write_results(path, results: list[dict]) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(results))
