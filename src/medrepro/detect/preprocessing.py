"""Intensity preprocessing of the Mask R-CNN paper.

``global`` is the paper's equation 1, global histogram equalisation
``T(r_k) = sum_{j<=k} n_j / n`` (scikit-image's ``equalize_hist`` computes exactly this
cumulative distribution for integer images), mapped back to 0..255;
``clahe`` is contrast-limited adaptive equalisation (scikit-image's ``equalize_adapthist``).
"""
from __future__ import annotations

import numpy as np
from skimage import exposure

METHODS = ("none", "global", "clahe")


def equalize(img: np.ndarray, method: str = "global", clip_limit: float = 0.01) -> np.ndarray:
    """Equalise a uint8 grayscale image; returns uint8."""
    if method not in METHODS:
        raise ValueError(f"equalisation {method!r}; expected one of {METHODS}")
    if img.dtype != np.uint8:
        raise TypeError(f"equalize expects uint8, got {img.dtype}")
    if method == "none":
        return img
    if method == "global":
        out = exposure.equalize_hist(img, nbins=256)
    else:
        out = exposure.equalize_adapthist(img, clip_limit=clip_limit)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def detection_augmentation(items: list[dict] | None, seed: int, min_visibility: float = 0.3):
    """An albumentations pipeline that moves an image, its instance masks and their boxes together.

    ``items`` is the config list (``[{name: Affine, params: {...}}, {name: HorizontalFlip}]``);
    boxes are COCO ``[x, y, w, h]`` with a ``labels`` field; boxes left less than
    ``min_visibility`` visible are dropped with their labels.  Call it as
    ``t(image=img, masks=[...], bboxes=[...], labels=[...])``.
    """
    from ..data import albumentations, build_augmentation

    A = albumentations()
    base = build_augmentation(items, seed)
    transforms = list(base.transforms) if base is not None else []
    return A.Compose(transforms, seed=seed,
                     bbox_params=A.BboxParams(format="coco", label_fields=["labels"], min_visibility=min_visibility))
