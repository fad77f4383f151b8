"""Data-parallel training (DistributedDataParallel) on the CPU with the gloo backend: two
processes end where one process ends, and only rank 0 writes."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from medrepro import distributed
from medrepro.classify import steps

from .conftest import demo_config


@pytest.fixture(scope="module")
def head_on_features(tmp_path_factory):
    """A transfer_kermany experiment (its head on cached features) and the files it trains on."""
    d = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    n, dim = 160, 32
    target = np.arange(n) % 2
    feats = rng.normal(size=(n, dim)).astype(np.float32)
    feats[:, :4] += 2.0 * target[:, None]  # the class signal
    ids = [f"im{i}" for i in range(n)]
    torch.save({"image_id": ids, "features": torch.from_numpy(feats), "pretrained": False}, d / "features.pt")
    split = np.where(np.arange(n) < 112, "train", np.where(np.arange(n) < 136, "val", "test"))
    pd.DataFrame({"image_id": ids, "split": split, "target": target,
                  "class": np.where(target == 1, "pneumonia", "normal")}).to_csv(d / "split.csv", index=False)
    cfg = demo_config()
    e = copy.deepcopy(cfg["experiments"]["tk_resnet50"])
    # no BatchNorm: its statistics are per rank under DDP (see medrepro.distributed)
    e["model"]["head"] = [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "units": 2}]
    e["train"].update(epochs=4, batch_size=16, lr=0.01, early_stopping=None)
    return d, e


def _train(d, e, out, world):
    distributed.launch(world, steps.train, d / "split.csv", e, out / "model.pt", out / "history.csv",
                       features=str(d / "features.pt"), backend="gloo")
    return pd.read_csv(out / "history.csv")


def test_two_processes_end_where_one_ends(head_on_features, tmp_path):
    d, e = head_on_features
    one = _train(d, e, tmp_path / "one", 1)
    two = _train(d, e, tmp_path / "two", 2)
    assert len(one) == len(two) == 4
    # the same global batches, gradients averaged over the two shards: equal up to reduction order
    for col in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert two[col].tolist() == pytest.approx(one[col].tolist(), rel=1e-4, abs=1e-5), col
    a = torch.load(tmp_path / "one" / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "two" / "model.pt", weights_only=False)["state_dict"]
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), k
    assert one["val_accuracy"].iloc[-1] > 0.7  # it learned


def test_shards_cover_each_batch_once():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    single = [b for b in torch.utils.data.BatchSampler(
        torch.utils.data.RandomSampler(range(37), generator=g()), 8, drop_last=False)]
    shards = [list(distributed.ShardedBatchSampler(37, 8, g(), r, 3)) for r in range(3)]
    assert len(shards[0]) == len(single) == 5
    for k, batch in enumerate(single):
        assert sorted(sum((s[k] for s in shards), [])) == sorted(batch)  # the single-process batch, split
