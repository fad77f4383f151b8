"""Torch datasets over converted PNGs, with albumentations augmentation from config.

An augmentation list in config names albumentations transforms and their
arguments, e.g.::

    augment:
      - {name: Affine, params: {rotate: [-10, 10], translate_percent: [-0.05, 0.05], p: 0.8}}
      - {name: RandomBrightnessContrast, params: {brightness_limit: 0.1, contrast_limit: 0.1}}

Two Keras ``ImageDataGenerator`` arguments may be given by their Keras names, for papers that
used it: ``fill_mode`` (``nearest``, Keras' default, repeats the edge pixels into the area a
shift or rotation uncovers; ``constant``, ``reflect``, ``wrap``) becomes albumentations'
``border_mode``, and ``zoom_range: z`` becomes an independent zoom per axis, ``scale`` from
``1/(1+z)`` to ``1/(1-z)`` (Keras draws ``zx``, ``zy`` from ``[1-z, 1+z]`` and maps output to
input coordinates, so the image is scaled by ``1/zx`` and ``1/zy``; albumentations draws the
scale uniformly in that range, which differs from Keras' distribution only in its density).

Augmentation runs on the resized uint8 image; tensors are float in [0, 1]
(the ``rescale=1/255`` the Keras papers used).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from .accel import sample_seed
from .specs import augment_steps

if TYPE_CHECKING:
    import albumentations as A


class AugmentationError(ValueError):
    pass


# Keras ``fill_mode`` (scipy.ndimage modes) -> OpenCV border modes
FILL_MODES = {"nearest": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT,
              "wrap": cv2.BORDER_WRAP}


def keras_params(params: dict, where: str) -> dict:
    """Translate the Keras-named arguments (``fill_mode``, ``zoom_range``) of one transform."""
    params = dict(params)
    if "fill_mode" in params:
        mode = params.pop("fill_mode")
        if mode not in FILL_MODES:
            raise AugmentationError(f"{where}: fill_mode {mode!r}; expected one of {sorted(FILL_MODES)}")
        params["border_mode"] = FILL_MODES[mode]
    if "zoom_range" in params:
        z = params.pop("zoom_range")
        if not isinstance(z, (int, float)) or not 0 <= z < 1:
            raise AugmentationError(f"{where}: zoom_range {z!r}; expected a number in [0, 1) (Keras' float form)")
        rng = (1 / (1 + z), 1 / (1 - z))
        params["scale"] = {"x": rng, "y": rng}
    return params


def albumentations():
    """The albumentations module, imported on first use (a second of every step's start, paid now
    only by the steps that augment) and without its check for a newer release: on import it asks
    PyPI, for up to 2 s, wherever ``NO_ALBUMENTATIONS_UPDATE`` is not set, a GPU node without
    internet included (set it to 0 to have the check)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A


def build_augmentation(items, seed: int) -> A.Compose | None:
    """An :class:`albumentations.Compose` from the config's ``augment`` list (``{name, params}``
    mappings or :class:`~medrepro.specs.AugmentStep`), or None when empty."""
    if not items:
        return None
    A = albumentations()
    transforms = []
    for i, item in enumerate(augment_steps(items)):
        cls = getattr(A, str(item.name), None)
        if cls is None or not isinstance(cls, type):
            raise AugmentationError(f"augment[{i}]: {item.name!r} is not an albumentations transform")
        params = keras_params(dict(item.params), f"augment[{i}] ({item.name})")
        try:
            transforms.append(cls(**params))
        except Exception as exc:
            raise AugmentationError(f"augment[{i}] ({item.name}): invalid params {dict(item.params)}: {exc}") from exc
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
        self.epoch_seed = 0
        self.cache = None
        if cache:  # one (N, H, W, C) uint8 block, filled image by image (np.stack of a list of them would
            # hold every image twice: 11 GB for the COVID-19 database's 21,165 images at 299 px), and a
            # (N, C, H, W) tensor view of it
            self.cache = np.empty((len(self.paths), *self.size, channels), np.uint8)
            for k, p in enumerate(self.paths):
                self.cache[k] = load_image(p, self.size, channels)
            self.cache_t = torch.from_numpy(self.cache).permute(0, 3, 1, 2)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        if self.transform is None and self.cache is not None:
            return self.cache_t[i].float().div_(255.0), int(self.targets[i])
        img = self.cache[i] if self.cache is not None else load_image(self.paths[i], self.size, self.channels)
        if self.transform is not None:
            self.transform.set_random_seed(sample_seed(self.epoch_seed, i))
            img = self.transform(image=img)["image"]
        x = torch.from_numpy(np.array(img.transpose(2, 0, 1))).float().div_(255.0)
        return x, int(self.targets[i])

    def set_epoch_seed(self, seed: int) -> None:
        """Re-seed augmentation so that epoch ``e`` draws the same whatever happened before: each
        image from a stream of its own (:func:`sample_seed`), so what it draws depends neither on the
        loader's worker count nor on which worker reads it."""
        self.epoch_seed = int(seed)
