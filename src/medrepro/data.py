"""Torch datasets over converted PNGs, with albumentations augmentation from config.

An augmentation list in config names albumentations transforms and their
arguments, e.g.::

    augment:
      - {name: Affine, params: {rotate: [-10, 10], translate_percent: [-0.05, 0.05], p: 0.8}}
      - {name: RandomBrightnessContrast, params: {brightness_limit: 0.1, contrast_limit: 0.1}}

Augmentation runs on the resized uint8 image; tensors are float in [0, 1]
(the ``rescale=1/255`` the Keras papers used).
"""
from __future__ import annotations

import albumentations as A
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset


class AugmentationError(ValueError):
    pass


def build_augmentation(items: list[dict] | None, seed: int) -> A.Compose | None:
    """An :class:`albumentations.Compose` from the config list, or None when empty."""
    if not items:
        return None
    transforms = []
    for i, item in enumerate(items):
        name = item.get("name")
        cls = getattr(A, str(name), None)
        if cls is None or not isinstance(cls, type):
            raise AugmentationError(f"augment[{i}]: {name!r} is not an albumentations transform")
        try:
            transforms.append(cls(**(item.get("params") or {})))
        except Exception as exc:
            raise AugmentationError(f"augment[{i}] ({name}): invalid params {item.get('params')}: {exc}") from exc
    return A.Compose(transforms, seed=seed)


def load_image(path: str, size: tuple[int, int], channels: int) -> np.ndarray:
    """Read a converted PNG as uint8 (H, W, C) resized to ``size`` = (H, W)."""
    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        if im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        arr = np.asarray(im)
    return arr[..., None] if arr.ndim == 2 else arr


class ImageTable(Dataset):
    """Images and integer targets from a split table (columns ``png`` and ``target``).

    All images are decoded and resized once, on construction (``cache=True``),
    so epochs cost only augmentation and the model.
    """

    def __init__(self, table: pd.DataFrame, size: tuple[int, int], channels: int,
                 transform: A.Compose | None = None, cache: bool = True):
        self.paths = table["png"].tolist()
        self.targets = table["target"].astype(int).to_numpy()
        self.ids = table["image_id"].tolist()
        self.size, self.channels, self.transform = tuple(size), channels, transform
        self.cache = None
        if cache:  # one (N, H, W, C) uint8 block, and a (N, C, H, W) tensor view of it
            self.cache = np.stack([load_image(p, self.size, channels) for p in self.paths]) if self.paths else \
                np.zeros((0, *self.size, channels), np.uint8)
            self.cache_t = torch.from_numpy(self.cache).permute(0, 3, 1, 2)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        if self.transform is None and self.cache is not None:
            return self.cache_t[i].float().div_(255.0), int(self.targets[i])
        img = self.cache[i] if self.cache is not None else load_image(self.paths[i], self.size, self.channels)
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        x = torch.from_numpy(np.array(img.transpose(2, 0, 1))).float().div_(255.0)
        return x, int(self.targets[i])

    def set_epoch_seed(self, seed: int) -> None:
        """Re-seed augmentation so that epoch ``e`` draws the same whatever happened before."""
        if self.transform is not None:
            self.transform.set_random_seed(seed)
