"""The papers trained with Keras (TensorFlow 2.x); each test pins one of its semantics against an
independent computation: the loss with class weights and L2, early stopping's restored epoch,
BatchNormalization's constants, and the input scaling of Inception-V3's weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss
from torch import nn
from torch.utils.data import TensorDataset

from medrepro.classify.models import KerasBatchNorm, build_sequential, l2_penalty, regularization_loss
from medrepro.classify.training import _loss_fn, fit, predict_proba
from medrepro.metrics import classification_metrics, prediction_table

from ..conftest import train_spec


def _data(n=96, seed=0, d=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(n, generator=g) > 0.4).long()  # imbalanced, learnable
    return TensorDataset(x[: n * 2 // 3], y[: n * 2 // 3]), TensorDataset(x[n * 2 // 3:], y[n * 2 // 3:])


def _head(l2=0.05, out=2, bn=False):
    layers = [{"type": "dense", "units": 8, "activation": "relu", "l2": l2}]
    if bn:
        layers.append({"type": "batchnorm"})
    layers.append({"type": "dense", "units": out})
    torch.manual_seed(0)
    return build_sequential(layers, (6,))


def test_class_weighted_loss_is_keras_sample_weighted_mean_over_the_batch():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.2], [-1.0, 1.5], [0.0, 3.0]])
    y = torch.tensor([0, 1, 1, 1])
    w = [3.0, 0.6]
    p = torch.softmax(logits, 1).numpy()
    per = -np.log(p[np.arange(4), y.numpy()])
    keras = float(np.sum(per * np.array(w)[y.numpy()]) / 4)  # SUM_OVER_BATCH_SIZE: divide by 4, not sum(w)
    assert float(_loss_fn(2, w, "cpu")(logits, y)) == pytest.approx(keras, rel=1e-6)
    # one sigmoid unit: binary cross-entropy weighted per sample, not pos_weight = w1 / w0
    z = torch.tensor([1.2, -0.3, 0.8, -2.0])
    q = 1 / (1 + np.exp(-z.numpy()))
    bce = -(y.numpy() * np.log(q) + (1 - y.numpy()) * np.log(1 - q))
    assert float(_loss_fn(1, w, "cpu")(z, y)) == pytest.approx(float(np.mean(bce * np.array(w)[y.numpy()])), rel=1e-6)


def test_val_loss_is_unweighted_data_loss_plus_l2_penalty_whatever_the_batch_size():
    tr, va = _data()
    vals = []
    for batch in (8, 32, 64):
        cfg = train_spec(epochs=2, batch_size=batch, lr=1e-2, seed=1, device="cpu")
        model, hist = fit(_head(), tr, va, cfg, [0.7, 1.9], progress=False)
        proba = predict_proba(model, va, accel=None)
        independent = log_loss(va.tensors[1].numpy(), proba, labels=[0, 1]) + float(regularization_loss(model).detach())
        assert hist["val_loss"].iloc[-1] == pytest.approx(independent, rel=1e-5)
        vals.append(hist["val_loss"].iloc[-1])
    assert float(regularization_loss(model).detach()) > 0.01  # the penalty is really in there
    # the test loss of the metrics files is the same Keras loss (predictions carry the penalty)
    table = prediction_table(range(len(va)), va.tensors[1].numpy(), proba, ["a", "b"], "val",
                             l2_penalty=l2_penalty(model))
    m = classification_metrics(table, ["a", "b"])
    # the chance level the report sets beside accuracy: scikit-learn's most-frequent-class predictor
    from sklearn.dummy import DummyClassifier

    y = va.tensors[1].numpy()
    assert m["majority_rate"] == pytest.approx(DummyClassifier(strategy="most_frequent").fit(y[:, None], y).score(
        y[:, None], y)) and 0.5 < m["majority_rate"] < 1
    assert m["loss"] == pytest.approx(hist["val_loss"].iloc[-1], rel=1e-5)
    assert m["loss"] - m["data_loss"] == pytest.approx(m["l2_penalty"]) and m["l2_penalty"] > 0.01


def test_restored_weights_are_the_last_epoch_better_by_min_delta_and_only_on_a_stop():
    tr, va = _data()
    base = dict(batch_size=16, lr=2e-2, seed=4, device="cpu")
    one, _ = fit(_head(), tr, va, train_spec(epochs=1, **base), progress=False)
    # min_delta so large that only epoch 1 (from +inf) counts as an improvement: Keras stops after
    # epoch 1 + patience and restores epoch 1's weights, although later val losses are lower
    stopped, hist = fit(_head(), tr, va, train_spec(epochs=10, **base, early_stopping={
        "patience": 2, "min_delta": 10.0, "restore_best_weights": True}), progress=False)
    assert len(hist) == 3 and hist["val_loss"].iloc[1:].min() < hist["val_loss"].iloc[0]
    for a, b in zip(one.state_dict().values(), stopped.state_dict().values()):
        assert torch.equal(a, b)
    # a run that never stops keeps its last weights (Keras 2 restores only when it stops)
    last, _ = fit(_head(), tr, va, train_spec(epochs=4, **base), progress=False)
    never, h = fit(_head(), tr, va, train_spec(epochs=4, **base, early_stopping={
        "patience": 50, "min_delta": 0.0, "restore_best_weights": True}), progress=False)
    assert len(h) == 4
    for a, b in zip(last.state_dict().values(), never.state_dict().values()):
        assert torch.equal(a, b)


def test_batchnorm_has_keras_constants():
    bn = [m for m in _head(bn=True).modules() if isinstance(m, KerasBatchNorm)][0]
    assert bn.eps == 1e-3 and bn.momentum == pytest.approx(0.01)
    # one training step moves the running mean 1 % of the way to the batch mean (Keras momentum 0.99)
    x = torch.full((4, 8), 5.0)
    bn.train()
    bn(x)
    assert torch.allclose(bn.running_mean, torch.full((8,), 0.05))
    custom = build_sequential([{"type": "batchnorm", "momentum": 0.9, "epsilon": 1e-5}], (3,))[0]
    assert custom.momentum == pytest.approx(0.1) and custom.eps == 1e-5


def test_inception_features_equal_torchvisions_own_model_built_with_weights(tmp_path):
    """torchvision's ``inception_v3(weights=...)`` sets ``transform_input=True``: its weights expect
    inputs in [-1, 1].  The project's backbone, given the same state dict, must compute the same
    features from [0, 1] pixels as torchvision's model fed the ImageNet-normalised images its
    ``weights.transforms()`` produce."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    from medrepro.backbones import IMAGENET_MEAN, IMAGENET_STD
    from medrepro.classify.models import Backbone

    torch.manual_seed(0)
    ref = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True, transform_input=True)
    path = tmp_path / "inception.pth"
    torch.save(ref.state_dict(), path)
    ref.eval()
    x = torch.rand(2, 3, 96, 96)
    normed = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = create_feature_extractor(ref, {"avgpool": "f"})(normed)["f"].flatten(1)
        ours = Backbone("inception_v3", str(path)).eval()
        got = ours(x)
        assert ours.normalize == "inception"
        scale = float(want.abs().max())  # random-init activations are large: compare relative to them
        assert float((got - want).abs().max()) / scale < 1e-5
        # the old behaviour (ImageNet statistics into [-1, 1] weights) gives other features
        wrong = Backbone("inception_v3", str(path), normalize="imagenet").eval()(x)
        assert float((wrong - want).abs().max()) / scale > 1e-2


def test_keras_fill_mode_nearest_repeats_the_edge_as_scipy_does():
    """Keras' ``apply_affine_transform`` is ``scipy.ndimage.affine_transform(order=1, mode=fill_mode)``:
    a shift of 5 px to the right with ``fill_mode: nearest`` repeats column 0 into the uncovered band."""
    from scipy import ndimage

    from medrepro.data import build_augmentation

    img = (np.arange(24 * 24, dtype=np.uint8).reshape(24, 24) * 7 % 251).astype(np.uint8)
    aug = build_augmentation([{"name": "Affine", "params": {
        "translate_px": {"x": [5, 5], "y": [0, 0]}, "fill_mode": "nearest", "p": 1.0}}], seed=0)
    got = aug(image=img[..., None])["image"][..., 0]
    want = ndimage.affine_transform(img.astype(float), np.eye(2), offset=(0, -5), order=1, mode="nearest")
    assert np.array_equal(got, want.astype(np.uint8))
    assert (got[:, :5] == img[:, :1]).all()  # not black
    black = build_augmentation([{"name": "Affine", "params": {
        "translate_px": {"x": [5, 5], "y": [0, 0]}, "p": 1.0}}], seed=0)(image=img[..., None])["image"][..., 0]
    assert (black[:, :5] == 0).all()  # albumentations' own default, which the papers did not use


def test_keras_zoom_range_zooms_each_axis_independently_within_keras_range():
    from medrepro.data import build_augmentation

    img = np.zeros((101, 101), np.uint8)
    img[30:71, 30:71] = 255  # a 41-px square at the centre
    aug = build_augmentation([{"name": "Affine", "params": {"zoom_range": 0.3, "p": 1.0}}], seed=3)
    ratios = []
    for _ in range(40):
        out = aug(image=img[..., None])["image"][..., 0] > 127
        w, h = out.any(0).sum(), out.any(1).sum()
        assert 41 / 1.3 - 2 <= w <= 41 / 0.7 + 2 and 41 / 1.3 - 2 <= h <= 41 / 0.7 + 2
        ratios.append(w / h)
    assert np.std(ratios) > 0.05  # width and height scale independently (keep_ratio would give 1.0)


# ----------------------------------------------------------------------------- fine-tuning depth
def test_shipped_keras_layer_lists_are_keras_own():
    """keras_layers.json is what keras.applications builds (include_top=False); 19 / 175 / 311 layers are
    also TensorFlow 2 Keras' counts, and Keras' own fine-tuning example freezes InceptionV3's first 249
    layers to train "the top 2 inception blocks": its layer 249 follows mixed8."""
    from medrepro import keras_layers

    fresh = keras_layers.generate()["backbones"]
    assert fresh == keras_layers.load()
    assert {b: len(v) for b, v in fresh.items()} == {"vgg16": 19, "vgg19": 22, "resnet50": 175, "inception_v3": 311,
                                                "efficientnet_b4": 474}
    assert fresh["inception_v3"][248][0] == "mixed8"


@pytest.mark.parametrize("backbone", ["vgg16", "vgg19", "resnet50", "inception_v3"])
def test_every_keras_layer_with_weights_maps_to_the_torch_module_of_the_same_shape(backbone):
    from medrepro import keras_layers
    from medrepro.classify.models import Backbone

    body = Backbone(backbone).body
    mapped = set()
    for name, cls, shapes in keras_layers.load()[backbone]:
        if not shapes:
            continue
        mod = body.get_submodule(keras_layers.torch_module(backbone, name))
        if cls == "Conv2D":  # Keras kernels are (h, w, in, out), torch's (out, in, h, w)
            kh, kw, cin, cout = shapes[0]
            assert isinstance(mod, nn.Conv2d) and tuple(mod.weight.shape) == (cout, cin, kh, kw), name
        else:
            assert cls == "BatchNormalization" and isinstance(mod, nn.BatchNorm2d), name
            assert all(s == [mod.num_features] for s in shapes), name
        mapped.add(mod)
    # one to one: every torch conv and BatchNorm of the backbone has its Keras layer
    assert mapped == {m for m in body.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))}


def test_fine_tuning_counts_keras_layers_as_the_thesis():
    """Keras' base_model.layers[:n // 2] frozen: VGG-16's second half starts at block3_conv3, ResNet-50's
    in the middle of conv4_block1 (its shortcut and last convolution train, its first two do not)."""
    from medrepro.classify.models import Backbone

    vgg = Backbone("vgg16")
    n = vgg.unfreeze_last(0.5, "keras")
    trains = [name for name, p in vgg.body.named_parameters() if p.requires_grad]
    assert trains[0] == "features.14.weight" and not vgg.body.get_submodule("features.12").weight.requires_grad
    assert n == sum(p.numel() for p in vgg.parameters() if p.requires_grad)
    assert n == 3 * 3 * 256 * 256 + 256 + sum(3 * 3 * 512 * c + 512 for c in (256, 512, 512, 512, 512, 512))
    # the torch count (leaf modules, ReLUs and poolings included) starts elsewhere
    torch_vgg = Backbone("vgg16")
    torch_vgg.unfreeze_last(0.5, "torch")
    assert [n for n, p in torch_vgg.body.named_parameters() if p.requires_grad][0] != "features.14.weight"

    res = Backbone("resnet50")
    res.unfreeze_last(0.5, "keras")
    block = res.body.get_submodule("layer3.0")
    assert block.get_submodule("downsample.0").weight.requires_grad and block.conv3.weight.requires_grad
    assert not block.conv1.weight.requires_grad and not block.conv2.weight.requires_grad
    assert all(p.requires_grad for p in res.body.layer4.parameters())
    assert not any(p.requires_grad for p in res.body.layer2.parameters())

    inc = Backbone("inception_v3")
    inc.unfreeze_last(0.5, "keras")
    bns = [m for m in inc.body.modules() if isinstance(m, nn.BatchNorm2d) and m.bias.requires_grad]
    assert bns and not any(m.weight.requires_grad for m in bns)  # Keras' BatchNorm here has no scale
    assert all(p.requires_grad for n_, p in inc.body.Mixed_7c.named_parameters() if not n_.endswith("bn.weight"))
    assert not any(p.requires_grad for p in inc.body.Mixed_5b.parameters())


def test_normalization_layer_adapts_to_the_training_features_as_keras_adapt_does(tmp_path):
    """A ``normalization`` head layer is Keras' Normalization: ``fit`` adapts it to the training
    inputs it receives (not the validation ones), its output matches keras' after ``adapt`` on the
    same rows, and a resumed or reloaded model keeps the statistics instead of re-adapting."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    g = torch.Generator().manual_seed(3)
    x = torch.randn(90, 6, generator=g) * torch.tensor([0.01, 1, 5, 100, 1e4, 3]) + torch.tensor([0, 2, -7, 50, 1e5, 0])
    y = (x[:, 1] > 2).long()
    train, val = TensorDataset(x[:60], y[:60]), TensorDataset(x[60:] + 1000, y[60:])
    torch.manual_seed(0)
    model = build_sequential([{"type": "normalization"}, {"type": "dense", "units": 2}], (6,))
    norm = model[0]
    assert not bool(norm.adapted)
    model, _ = fit(model, train, val, train_spec(epochs=1, batch_size=16, lr=1e-3, seed=1), progress=False,
                   checkpoint=tmp_path / "ck.pt", fingerprint="f")
    assert bool(norm.adapted)
    ref = keras.layers.Normalization()
    ref.adapt(x[:60].double().numpy())
    np.testing.assert_allclose(norm.mean.numpy(), np.asarray(ref.mean).ravel(), rtol=1e-5)
    np.testing.assert_allclose(norm.variance.numpy(), np.asarray(ref.variance).ravel(), rtol=1e-4)
    probe = x[60:70].numpy()
    with torch.no_grad():
        ours = norm(torch.from_numpy(probe)).numpy()
    np.testing.assert_allclose(ours, np.asarray(ref(probe.astype("float64"))), rtol=1e-4, atol=1e-4)
    # a later fit (resume, or stage 4 continuing a trained head) keeps the adapted statistics
    before = norm.mean.clone()
    shifted = TensorDataset(x[:60] * 3 + 7, y[:60])
    fit(model, shifted, val, train_spec(epochs=1, batch_size=16, lr=1e-3, seed=1), progress=False)
    assert torch.equal(norm.mean, before)
    fresh = build_sequential([{"type": "normalization"}, {"type": "dense", "units": 2}], (6,))
    fresh.load_state_dict(model.state_dict())
    assert bool(fresh[0].adapted) and torch.equal(fresh[0].variance, norm.variance)


def test_normalization_epsilon_zero_keeps_features_far_below_keras_epsilon():
    """Random-init EfficientNet-B4 features are about 1e-15: Keras' epsilon (1e-7) divides them by
    1e-7 and flattens them to ~0; epsilon 0 standardises them like any others."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(40, 5, generator=g) * 3e-15 + 1e-14).float()
    keras_like = build_sequential([{"type": "normalization"}], (5,))[0]
    any_scale = build_sequential([{"type": "normalization", "epsilon": 0}], (5,))[0]
    x64 = x.double()
    for layer in (keras_like, any_scale):
        layer.adapt(x64.sum(0), (x64 * x64).sum(0), len(x))
    with torch.no_grad():
        assert keras_like(x).abs().max() < 1e-6
        out = any_scale(x)
    np.testing.assert_allclose(out.double().std(0, unbiased=False).numpy(), 1.0, rtol=1e-3)
    const = build_sequential([{"type": "normalization", "epsilon": 0}], (2,))[0]
    const.adapt(torch.tensor([4.0, 2.0], dtype=torch.float64), torch.tensor([8.0, 2.0], dtype=torch.float64), 2)
    with torch.no_grad():  # a constant feature (variance 0) maps to 0, not to inf
        assert torch.equal(const(torch.tensor([[2.0, 1.0]])), torch.tensor([[0.0, 0.0]]))
