"""RSNA boxes -> instance masks -> COCO instance JSON (and a VIA v1 export).

The RSNA labels are boxes; the Mask R-CNN paper drew opacity masks from them in the VGG
Image Annotator. ``shape`` says which mask a box becomes: ``box`` (the full rectangle, so
boxes survive the round trip exactly) or ``ellipse`` (the ellipse inscribed in the box,
closer to an opacity's outline).  Masks are stored as COCO run-length encodings made by
pycocotools, so any COCO tool reads them.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils

SHAPES = ("box", "ellipse")
CATEGORY = {"id": 1, "name": "opacity", "supercategory": "lung"}


def box_to_mask(box, height: int, width: int, shape: str = "box") -> np.ndarray:
    """A uint8 (H, W) mask of one ``[x, y, w, h]`` box (pixel units; edges rounded to pixels)."""
    if shape not in SHAPES:
        raise ValueError(f"mask shape {shape!r}; expected one of {SHAPES}")
    x, y, w, h = (float(v) for v in box)
    x0, y0 = int(round(x)), int(round(y))
    x1, y1 = int(round(x + w)), int(round(y + h))
    m = np.zeros((height, width), np.uint8)
    if shape == "box":
        m[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)] = 1
    else:
        yy, xx = np.mgrid[0:height, 0:width]
        cy, cx, ry, rx = (y0 + y1) / 2 - 0.5, (x0 + x1) / 2 - 0.5, max((y1 - y0) / 2, 0.5), max((x1 - x0) / 2, 0.5)
        m[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
    return m


def encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode(rle: dict) -> np.ndarray:
    r = dict(rle)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return mask_utils.decode(r)


def coco_from_table(table: pd.DataFrame, shape: str = "box") -> dict:
    """COCO instance JSON of the rows of a converted manifest or split table.

    Uses the columns ``image_id``, ``png``, ``width``, ``height`` and ``boxes`` (JSON
    ``[[x, y, w, h], ...]`` in the PNG's pixels).  Images without boxes are kept with no
    annotation (healthy images are part of the Mask R-CNN experiments).
    """
    images, anns = [], []
    classes = table["class"].tolist() if "class" in table.columns else [None] * len(table)
    for k, (row, cls) in enumerate(zip(table.itertuples(index=False), classes), start=1):
        h, w = int(row.height), int(row.width)
        im = {"id": k, "file_name": str(row.png), "height": h, "width": w, "medrepro_id": row.image_id}
        if cls is not None:
            im["medrepro_class"] = cls
        images.append(im)
        for box in json.loads(row.boxes or "[]"):
            m = box_to_mask(box, h, w, shape)
            rle = encode(m)
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": 1, "iscrowd": 0,
                         "segmentation": rle, "area": float(mask_utils.area(_bytes(rle))),
                         "bbox": [float(v) for v in mask_utils.toBbox(_bytes(rle))]})
    return {"images": images, "annotations": anns, "categories": [CATEGORY],
            "info": {"description": f"RSNA opacities as {shape} masks", "mask_shape": shape}}


def _bytes(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii") if isinstance(rle["counts"], str)
            else rle["counts"]}


def boxes_from_coco(coco: dict) -> dict[str, list[list[float]]]:
    """medrepro image id -> the boxes of its annotations, from their masks (pycocotools ``toBbox``)."""
    by_k = {im["id"]: im["medrepro_id"] for im in coco["images"]}
    out: dict[str, list[list[float]]] = {v: [] for v in by_k.values()}
    for a in coco["annotations"]:
        out[by_k[a["image_id"]]].append([float(v) for v in mask_utils.toBbox(_bytes(a["segmentation"]))])
    return out


def via_v1_from_table(table: pd.DataFrame, shape: str = "box") -> dict:
    """The same annotations in VGG Image Annotator 1.x JSON (the tool the paper used):
    keys ``<filename><size>``, regions as a dict of ``rect`` or ``ellipse`` shapes."""
    import os

    out = {}
    for row in table.itertuples(index=False):
        size = os.path.getsize(row.png) if os.path.exists(row.png) else -1
        name = os.path.basename(str(row.png))
        regions = {}
        for i, (x, y, w, h) in enumerate(json.loads(row.boxes or "[]")):
            if shape == "box":
                sa = {"name": "rect", "x": round(x), "y": round(y), "width": round(w), "height": round(h)}
            else:
                sa = {"name": "ellipse", "cx": round(x + w / 2), "cy": round(y + h / 2), "rx": round(w / 2),
                      "ry": round(h / 2)}
            regions[str(i)] = {"shape_attributes": sa, "region_attributes": {"label": "opacity"}}
        out[f"{name}{size}"] = {"filename": name, "size": size, "regions": regions, "file_attributes": {}}
    return out
