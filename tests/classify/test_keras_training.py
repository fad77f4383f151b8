"""Training against Keras itself (Keras 3, torch backend): the small CNNs of cnn_kermany and
cnn_pediatric and a transfer_kermany head with L2, class weights and BatchNorm, each built here from
its config (:func:`medrepro.classify.models.build_sequential`) and in Keras from the same layer list,
given the same initial weights, trained for N steps on the same batches (the whole training set, so
that both frameworks see one batch per epoch whatever order they shuffle it in) with Adam: Keras'
``model.fit`` and this project's :func:`medrepro.classify.training.fit`. Asserted: every step's
training loss (L2 terms included, as Keras reports it), every epoch's ``val_loss`` and the final
weights agree: losses within a relative 1e-5, each layer's weights within 1e-4 of how far training
moved them. Both run in float64, so that the comparison sees the semantics, not float32 rounding, which
Adam's per-weight normalisation amplifies where a gradient is near zero (in float32, cnn_pediatric's
losses agreed to 4e-4 after 6 steps and some of its convolution weights to 2 % of their movement;
in float64 to 1e-7 and 1e-6). Adam's epsilon enters as Keras adds it
(:func:`medrepro.classify.training.keras_adam_epsilon`): torch's own placement left cnn_kermany's
losses 1 % from Keras' after 6 steps.

Dropout is set to rate 0 in both: its masks are drawn by two different generators, so no two
frameworks drop the same units.
"""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from medrepro.classify.models import build_sequential  # noqa: E402
from medrepro.classify.training import fit  # noqa: E402

from ..conftest import demo_config, train_spec  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
LOSS_TOLERANCE, WEIGHT_TOLERANCE = 1e-5, 1e-4
STEPS = 6


@pytest.fixture(autouse=True)
def float64():
    """Keras in float64 for these tests (the dtype policy: once a layer was built, Keras keeps the
    policy it made from floatx, so both are set), float32 again after them."""
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")


def keras_model(layers: list[dict], input_shape: tuple, output: str):
    """Keras' model of a config layer list (channels-last input), the papers' output activation on top."""
    L = keras.layers
    out = [keras.Input(input_shape)]
    for i, spec in enumerate(layers):
        kind, last = spec["type"], i == len(layers) - 1
        act = spec.get("activation") or None
        if kind == "conv":
            out.append(L.Conv2D(spec["filters"], spec["kernel"], activation=act))
        elif kind == "maxpool":
            out.append(L.MaxPooling2D(spec.get("size", 2)))
        elif kind == "flatten":
            out.append(L.Flatten())
        elif kind == "dense":
            reg = keras.regularizers.L2(spec["l2"]) if spec.get("l2") else None
            if last:
                act = "sigmoid" if output == "sigmoid" else "softmax"
            out.append(L.Dense(spec["units"], activation=act, kernel_regularizer=reg))
        elif kind == "dropout":
            out.append(L.Dropout(0.0))
        elif kind == "batchnorm":
            out.append(L.BatchNormalization())
        else:
            raise AssertionError(kind)
    return keras.Sequential(out)


def copy_weights(torch_model: nn.Sequential, km, input_shape: tuple) -> None:
    """torch's initial weights into Keras' layers: kernels transposed, and the first dense layer after
    a flatten reordered from torch's (C, H, W) to Keras' (H, W, C) flattening."""
    k_layers = [layer for layer in km.layers if layer.weights]
    t_layers = [m for m in torch_model if isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm))]
    assert len(k_layers) == len(t_layers)
    with torch.no_grad():
        x = torch.zeros(1, *input_shape, dtype=next(torch_model.parameters()).dtype)
        flat_from = None
        for m in torch_model:
            if isinstance(m, nn.Flatten) and x.dim() == 4:
                flat_from = tuple(x.shape[1:])
            x = m(x) if not isinstance(m, nn.modules.batchnorm._BatchNorm) else x
            if isinstance(m, nn.Linear) and flat_from is not None:
                m._flat_from, flat_from = flat_from, None
    for t, k in zip(t_layers, k_layers):
        if isinstance(t, nn.Conv2d):
            k.set_weights([t.weight.detach().permute(2, 3, 1, 0).numpy(), t.bias.detach().numpy()])
        elif isinstance(t, nn.Linear):
            w = t.weight.detach()
            if getattr(t, "_flat_from", None):
                c, h, ww = t._flat_from
                w = w.reshape(-1, c, h, ww).permute(0, 2, 3, 1).reshape(w.shape[0], -1)
            k.set_weights([w.T.numpy(), t.bias.detach().numpy()])
        else:
            k.set_weights([t.weight.detach().numpy(), t.bias.detach().numpy(), t.running_mean.numpy(),
                           t.running_var.numpy()])


def torch_weights_as_keras(torch_model: nn.Sequential, km, input_shape: tuple) -> list[np.ndarray]:
    probe = keras.models.clone_model(km)
    copy_weights(torch_model, probe, input_shape)
    return probe.get_weights()


def _train_both(layers, input_shape, output, x, y, xv, yv, class_weights=None):
    n_out = layers[-1]["units"]
    torch.manual_seed(0)
    ours = build_sequential(layers, input_shape, "glorot_uniform").double()
    x, y, xv, yv = x.astype("float64"), y, xv.astype("float64"), yv
    keras.utils.set_random_seed(0)
    k_shape = input_shape if len(input_shape) == 1 else (*input_shape[1:], input_shape[0])
    km = keras_model(layers, k_shape, output)
    copy_weights(ours, km, input_shape)
    start = copy.deepcopy(ours)
    loss = "binary_crossentropy" if output == "sigmoid" else "sparse_categorical_crossentropy"
    km.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7), loss=loss)
    to_k = (lambda a: a) if len(input_shape) == 1 else (lambda a: np.transpose(a, (0, 2, 3, 1)))
    yk = y.astype("float32")[:, None] if output == "sigmoid" else y
    yvk = yv.astype("float32")[:, None] if output == "sigmoid" else yv
    kh = km.fit(to_k(x), yk, batch_size=len(x), epochs=STEPS, shuffle=False, verbose=0,
                validation_data=(to_k(xv), yvk), validation_batch_size=len(xv),
                class_weight=dict(enumerate(class_weights)) if class_weights else None).history
    cfg = train_spec(epochs=STEPS, batch_size=len(x), lr=1e-3, seed=1, channels_last=False)
    assert n_out == (1 if output == "sigmoid" else int(y.max()) + 1)
    model, hist = fit(ours, TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                      TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)), cfg, class_weights, progress=False)
    return start, model, hist, km, kh


def _assert_same(start, model, hist, km, kh, input_shape):
    np.testing.assert_allclose(hist["loss"].to_numpy(), kh["loss"], rtol=LOSS_TOLERANCE)
    np.testing.assert_allclose(hist["val_loss"].to_numpy(), kh["val_loss"], rtol=LOSS_TOLERANCE)
    ours, before = torch_weights_as_keras(model, km, input_shape), torch_weights_as_keras(start, km, input_shape)
    for a, b, a0 in zip(ours, km.get_weights(), before):
        moved = np.linalg.norm(b - a0)
        assert moved > 0 and np.linalg.norm(a - b) / moved <= WEIGHT_TOLERANCE, a.shape


def _images(n, channels=1, size=40, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    x = rng.random((n, channels, size, size)).astype("float32") * 0.6
    x[y == 1, :, 10:24, 10:24] += 0.4  # a bright square marks class 1
    return x, y


@pytest.mark.parametrize("experiment", ["cnn_kermany", "cnn_pediatric"])
def test_small_cnn_trains_as_keras_trains_it(experiment):
    spec = demo_config("full.yaml")["experiments"][experiment]["model"]
    layers = [dict(layer, rate=0.0) if layer["type"] == "dropout" else dict(layer) for layer in spec["layers"]]
    x, y = _images(24)
    xv, yv = _images(12, seed=1)
    start, model, hist, km, kh = _train_both(layers, (1, 40, 40), spec["output"], x, y, xv, yv)
    assert any(not torch.equal(a, b) for a, b in zip(start.state_dict().values(), model.state_dict().values()))
    _assert_same(start, model, hist, km, kh, (1, 40, 40))


def test_transfer_head_with_l2_class_weights_and_batchnorm_trains_as_keras_trains_it():
    """tk_resnet50_l2's head (Dense 128 relu with L2 0.01, BatchNormalization, Dense 2 softmax) on
    pooled features, with balanced class weights on imbalanced classes."""
    from medrepro.classify.training import class_weights

    spec = demo_config("full.yaml")["experiments"]["tk_resnet50_l2"]["model"]
    layers = [dict(layer) for layer in spec["head"]]
    rng = np.random.default_rng(3)
    y = (rng.random(40) < 0.3).astype(np.int64)
    x = (rng.normal(0, 1, (40, 32)) + y[:, None] * 0.8).astype("float32")
    yv = (rng.random(16) < 0.3).astype(np.int64)
    xv = (rng.normal(0, 1, (16, 32)) + yv[:, None] * 0.8).astype("float32")
    w = class_weights(y, 2)
    assert w[0] != w[1]
    start, model, hist, km, kh = _train_both(layers, (32,), spec["output"], x, y, xv, yv, class_weights=w)
    _assert_same(start, model, hist, km, kh, (32,))
