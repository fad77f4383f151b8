"""The feature cache: a frozen backbone sees every image once (rule ``features``), and heads of
every experiment and study run sharing that backbone, its weights and input size train on the
pooled features."""
from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from ..io import atomic_path, read_csv
from ..specs import device_spec, model_spec

if TYPE_CHECKING:
    from torch.utils.data import TensorDataset


def extract_features(converted_manifest, model: Mapping, weights: str | None, seed: int, out, train: Mapping,
                     batch_size: int = 64) -> None:
    """Pooled backbone features of every image of a dataset, for all experiments that share
    the backbone, its weights and the input size; ``train`` holds the device keys of a validated
    ``train`` block (``device``, ``gpus``, ``amp``, ``allow_cpu``, ``channels_last``; the rule
    passes ``features_device``'s)."""
    import dataclasses

    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ..accel import from_train, log_line
    from ..data import ImageTable
    from .models import build_backbone

    m = model_spec(model)
    df = read_csv(converted_manifest).assign(target=0)
    backbone = build_backbone(m, weights, seed)
    ds = ImageTable(df, m.input_size, m.channels, cache=False)   # each image is read once: no decoded copy of all
    accel = from_train(dataclasses.replace(device_spec(train), amp=False))  # features are cached in full precision
    print(log_line(accel), file=sys.stderr, flush=True)
    backbone = accel.model(backbone).eval()
    # one tensor of every image's features, filled batch by batch: a list of batches joined at the
    # end would hold them twice (the flattened Inception-V3 features of the COVID-19 database's
    # 21,165 images at 299 px are 11 GB; bench/scale.py)
    feats = None
    with torch.no_grad():
        done = 0
        for x, _ in tqdm(DataLoader(ds, batch_size=batch_size, pin_memory=accel.pin_memory), desc="features",
                         file=sys.stderr, mininterval=5):
            f = backbone(accel.batch(x)).float().cpu()
            if feats is None:
                feats = torch.empty((len(ds), *f.shape[1:]), dtype=f.dtype)
            feats[done:done + len(f)] = f
            done += len(f)
    if feats is None:
        raise ValueError(f"{converted_manifest}: no images to extract features from")
    with atomic_path(out) as tmp:
        torch.save({"image_id": df["image_id"].tolist(), "features": feats,
                    "backbone": m.backbone, "input_size": list(m.input_size),
                    "weights": weights, "pretrained": weights is not None, "seed": seed}, tmp)


def load_features(path) -> dict:
    """A features file, with an image-id index."""
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=False)
    ck["index"] = {k: i for i, k in enumerate(ck["image_id"])}
    ck["path"] = str(path)
    return ck


def feature_table(features, part: pd.DataFrame) -> TensorDataset:
    """The cached features of ``part``'s images and their targets; ``features`` is a features file
    or one already loaded by :func:`load_features`."""
    import torch
    from torch.utils.data import TensorDataset

    ck = features if isinstance(features, dict) else load_features(features)
    index = ck["index"]
    missing = [i for i in part["image_id"] if i not in index]
    if missing:
        raise ValueError(f"{ck['path']}: no features for {len(missing)} image(s), e.g. {missing[:3]}; "
                         "rerun the features rule")
    rows = torch.tensor([index[i] for i in part["image_id"]], dtype=torch.long)
    ds = TensorDataset(ck["features"][rows], torch.tensor(part["target"].astype(int).to_numpy()))
    ds.targets = part["target"].astype(int).to_numpy()
    return ds
