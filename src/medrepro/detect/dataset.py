"""Mask R-CNN's data, shared by both backends: images and instance masks of one split's COCO JSON
(written by :mod:`medrepro.detect.annotation`), each image read as grayscale, resized to ``input_size``
(square), equalised (:func:`medrepro.detect.preprocessing.equalize`, the paper's equation 1 by default)
and, for training, augmented together with its masks by albumentations; target boxes are the
tight boxes of the (augmented) masks."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..accel import sample_seed
from ..specs import RunSpec, as_plain
from .annotation import decode
from .preprocessing import detection_augmentation, equalize

LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


def annotations_digest(annotations_dir) -> str:
    """SHA-256 of a run's training and validation annotations (``train.json``, ``val.json``)."""
    d = Path(annotations_dir)
    return hashlib.sha256((d / "train.json").read_bytes() + (d / "val.json").read_bytes()).hexdigest()


def resume_fingerprint(spec: RunSpec, weights: str | None, data_digest: str) -> str:
    """What a per-epoch checkpoint of either backend must match to be resumed: the run's spec, the
    starting weights (the file's bytes, so a file replaced at the same path is another start) and
    the training data (:func:`annotations_digest`), so that a checkpoint of a run on other
    settings, weights or images is not resumed."""
    w = None
    if weights:
        with open(weights, "rb") as fh:
            w = hashlib.file_digest(fh, "sha256").hexdigest()
    cfg = as_plain(spec) | {"w": w, "data": data_digest}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
        """Augmentation of the epoch seeded ``seed``: each image draws from a stream of its own
        (:func:`medrepro.data.sample_seed`), the same in any loader worker and for any worker count."""
        self.epoch_seed = seed
        self.transform = detection_augmentation(self.augment_cfg, seed) if self.augment_cfg else None

    def __getitem__(self, i: int):
        img, masks = self.images[i], self.masks[i]
        if self.transform is not None:
            self.transform.set_random_seed(sample_seed(self.epoch_seed, i))
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
