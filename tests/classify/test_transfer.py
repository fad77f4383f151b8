"""Transfer models: frozen torchvision backbones, heads with L2, and the feature cache."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from medrepro import datasets, prepare
from medrepro.classify import steps
from medrepro.classify.features import extract_features
from medrepro.classify.models import build_model, regularization_loss
from medrepro.convert import convert_manifest
from medrepro.specs import model_spec

from ..conftest import demo_config


def _experiment(backbone="resnet50", size=32, l2=None):
    cfg = demo_config()
    e = copy.deepcopy(cfg["experiments"]["tk_resnet50"])
    e["model"].update(backbone=backbone, input_size=[size, size])
    # the paper's head (as in full.yaml): without the demo's normalization layer
    e["model"]["head"] = [layer for layer in e["model"]["head"] if layer["type"] != "normalization"]
    if l2:
        e["model"]["head"][0]["l2"] = l2
    e["train"].update(epochs=3, early_stopping=None)
    return e


def test_frozen_backbone_trains_only_the_head():
    model = build_model(model_spec(_experiment()["model"]), n_outputs=2)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = (2048 * 128 + 128) + 2 * 128 + (128 * 2 + 2)  # dense, batchnorm (gamma, beta), dense
    assert trainable == head == 262786
    assert total - trainable == 23508032  # torchvision ResNet-50 without its fc layer
    model.train()
    assert not model.backbone.training and model.head.training  # frozen BatchNorm stays in inference mode


def test_l2_penalty_is_keras_l2():
    model = build_model(model_spec(_experiment(l2=0.01)["model"]), n_outputs=2)
    w = model.head[0].weight
    assert float(regularization_loss(model).detach()) == pytest.approx(0.01 * float(w.detach().pow(2).sum()), rel=1e-6)
    assert regularization_loss(build_model(model_spec(_experiment()["model"]), n_outputs=2)) == 0.0


@pytest.fixture(scope="module")
def kermany_split(raw, tmp_path_factory):
    root, _ = raw
    d = tmp_path_factory.mktemp("tk")
    m = datasets.kermany.ingest(root / "kermany").manifest
    conv, _ = convert_manifest(m, d / "png", max_side=64)
    conv.to_csv(d / "converted.csv", index=False)
    e = _experiment()
    prepare.split(d / "converted.csv", e, d / "split.csv", d / "audit.json")
    extract_features(d / "converted.csv", e["model"], None, 0, d / "features.pt", e["train"])
    return d, e


def test_feature_cache_equals_full_forward_passes(kermany_split):
    d, e = kermany_split
    steps.train(d / "split.csv", e, d / "cached.pt", d / "h_cached.csv", features=d / "features.pt")
    e_full = copy.deepcopy(e)
    e_full["train"]["feature_cache"] = "off"
    steps.train(d / "split.csv", e_full, d / "full.pt", d / "h_full.csv")
    a, b = pd.read_csv(d / "h_cached.csv"), pd.read_csv(d / "h_full.csv")
    assert np.allclose(a.to_numpy(), b.to_numpy(), rtol=1e-4, atol=1e-5)
    sa = torch.load(d / "cached.pt", weights_only=False)["state_dict"]
    sb = torch.load(d / "full.pt", weights_only=False)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-4, atol=1e-5), k
    # predictions from the cache and from images through the rebuilt backbone agree
    p1 = steps.predict(d / "split.csv", d / "cached.pt", e, d / "p1.csv", features=d / "features.pt")
    p2 = steps.predict(d / "split.csv", d / "cached.pt", e, d / "p2.csv")
    assert np.allclose(p1["prob_pneumonia"], p2["prob_pneumonia"], atol=1e-5)
    assert (p1["pred"] == p2["pred"]).all()


def test_missing_features_are_named(kermany_split, tmp_path):
    d, e = kermany_split
    ck = torch.load(d / "features.pt", weights_only=False)
    ck["image_id"] = ck["image_id"][:3]
    ck["features"] = ck["features"][:3]
    torch.save(ck, tmp_path / "short.pt")
    with pytest.raises(ValueError, match="no features for .* image"):
        steps.train(d / "split.csv", e, tmp_path / "m.pt", tmp_path / "h.csv", features=tmp_path / "short.pt")


def test_imagenet_weights_download_and_load(http_root, tmp_path):
    """A torchvision-named weights file is fetched, its SHA-256 prefix checked, and loaded."""
    import hashlib

    from medrepro.classify.models import Backbone
    from medrepro.download import DownloadError, fetch_torchvision_weights

    www, url = http_root
    torch.manual_seed(123)
    import torchvision

    state = torchvision.models.resnet50(weights=None).state_dict()
    raw = tmp_path / "w.pth"
    torch.save(state, raw)
    sha = hashlib.sha256(raw.read_bytes()).hexdigest()[:8]
    (www / f"resnet50-{sha}.pth").write_bytes(raw.read_bytes())
    (www / "resnet50-00000000.pth").write_bytes(raw.read_bytes())
    dest = tmp_path / "weights" / "resnet50.pth"
    fetch_torchvision_weights("resnet50", dest, url=f"{url}/resnet50-{sha}.pth")
    with pytest.raises(DownloadError, match="does not start with 00000000"):
        fetch_torchvision_weights("resnet50", tmp_path / "bad.pth", url=f"{url}/resnet50-00000000.pth")
    loaded = Backbone("resnet50", weights=str(dest))
    assert loaded.pretrained
    assert torch.equal(loaded.body.conv1.weight, state["conv1.weight"])
    random_init = Backbone("resnet50", weights=None, seed=0)
    assert not torch.equal(random_init.body.conv1.weight, state["conv1.weight"])
    with pytest.raises(Exception, match="not a vgg16 state dict"):
        Backbone("vgg16", weights=str(dest))


def test_feature_cache_holds_every_image_in_order_across_batches_and_refuses_an_empty_manifest(kermany_split, tmp_path):
    """The cache is filled batch by batch into one tensor: with batches of 3 (the last one short) it
    equals the backbone's own forward pass of each image, in the manifest's order; a manifest
    without images is refused, naming it, instead of writing an empty cache."""
    d, e = kermany_split
    extract_features(d / "converted.csv", e["model"], None, 0, tmp_path / "f3.pt", e["train"], batch_size=3)
    got = torch.load(tmp_path / "f3.pt", weights_only=False)
    ref = torch.load(d / "features.pt", weights_only=False)
    assert got["image_id"] == ref["image_id"] and len(got["image_id"]) % 3 != 0
    assert torch.allclose(got["features"], ref["features"], rtol=1e-4, atol=1e-5)
    empty = tmp_path / "empty.csv"
    pd.read_csv(d / "converted.csv").head(0).to_csv(empty, index=False)
    with pytest.raises(ValueError, match="empty.csv: no images"):
        extract_features(empty, e["model"], None, 0, tmp_path / "none.pt", e["train"])
    assert not (tmp_path / "none.pt").exists()
