"""The Keras applications' backbones in torch: what ``keras.applications.<Model>(weights='imagenet',
include_top=False)`` computes, loaded from the Keras weight files themselves.

The two transfer papers built their models with Keras (``tf.keras.applications``: VGG-16, VGG-19,
ResNet-50, Inception-V3, EfficientNet-B4, ``weights='imagenet'``) and fed them each model's own
``preprocess_input``. Those networks are not torchvision's, even where the names agree:

==================  =================================================================================
VGG-16, VGG-19      the same network as torchvision's ``features``; Keras' weights, caffe input
                    (:data:`medrepro.backbones.KERAS_PREPROCESS`)
ResNet-50           v1: the stride of a down-sampling block sits in its first 1x1 convolution
                    (torchvision's v1.5 puts it in the 3x3), every convolution has a bias, BatchNorm's
                    epsilon is 1.001e-5. torchvision's modules, restrided, with biases added.
Inception-V3        torchvision's modules; the branch average poolings divide by the pixels inside
                    the image (Keras' ``padding='same'``), not by 9 (torch's ``count_include_pad``);
                    BatchNorm without a scale (``scale=False``: gamma fixed at 1)
EfficientNet-B4     timm's ``tf_efficientnet_b4`` (TensorFlow's 'same' padding, BatchNorm epsilon
                    1e-3, the same blocks, squeeze-excitation and stochastic depth as Keras'), behind
                    Keras' own input layers: ``Rescaling(1/255)``, ``Normalization`` (its mean and
                    variance read from the weights file) and, as Keras builds it for
                    ``weights='imagenet'``, ``Rescaling(1/sqrt(std))`` (tensorflow/tensorflow#49930)
==================  =================================================================================

Weights come from Keras' own ``*_notop.h5`` files (:data:`medrepro.backbones.KERAS_WEIGHTS`) and are
read the way Keras reads them (:func:`load_keras_h5`): layer by layer in the order of
``model.layers``, each layer's values in its saved order, every shape checked. The test suite builds
each application in Keras with random weights, writes them in this legacy layout and checks that
these networks compute Keras' features (tests/classify/test_keras_equivalence.py).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .. import keras_layers
from ..backbones import ModelSpecError

# Keras' ImageNet constants: EfficientNet's third input layer divides by sqrt(std)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


class KerasWeightsError(ValueError):
    pass


class Trunk(nn.Sequential):
    """A backbone's layers up to its last feature map, run in order; returns ``{"features": map}``
    as torchvision's feature extractor does. Module names are the source network's."""

    def forward(self, x):
        return {"features": super().forward(x)}


class EfficientNetInput(nn.Module):
    """Keras EfficientNet's input layers for ``weights='imagenet'``: ``Rescaling(1/255)``, then
    ``Normalization`` (``(x - mean) / max(sqrt(variance), 1e-7)``, mean and variance from the weights
    file), then ``Rescaling(1/sqrt(std))`` with ImageNet's standard deviations. Takes 0-255 pixels."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(3))
        self.register_buffer("variance", torch.ones(3))
        self.register_buffer("rescale", torch.tensor([1.0 / s ** 0.5 for s in IMAGENET_STDDEV_RGB]))

    def forward(self, x):
        x = x * (1.0 / 255.0)
        sd = self.variance.sqrt().clamp_min(1e-7).view(1, 3, 1, 1)
        return (x - self.mean.view(1, 3, 1, 1)) / sd * self.rescale.view(1, 3, 1, 1)


def _exclude_padding(module, args):
    """Forward pre-hook of an Inception branch-pool convolution: torchvision averaged its 3x3 window
    over 9 values, zero padding included; Keras' ``AveragePooling2D(padding='same')`` averages the
    pixels inside the image only. Rescale by 9 / (pixels inside) per position."""
    (x,) = args
    h, w = x.shape[-2:]
    ones = torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device)
    inside = nn.functional.avg_pool2d(ones, 3, 1, 1, count_include_pad=True) * 9.0  # pixels inside
    return (x * (9.0 / inside),)


def _vgg(name):
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    return Trunk(OrderedDict(features=net.features))


def _resnet50():
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    for layer in (net.layer2, net.layer3, net.layer4):  # v1: stride in the first 1x1 convolution
        block = layer[0]
        block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.bias is None:
            m.bias = nn.Parameter(torch.zeros(m.out_channels))
        elif isinstance(m, nn.BatchNorm2d):
            m.eps = 1.001e-5
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return Trunk(OrderedDict((n, getattr(net, n)) for n in names))


def _inception_v3():
    import torchvision
    from torchvision.models.inception import InceptionA, InceptionC, InceptionE

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    for m in net.modules():
        if isinstance(m, (InceptionA, InceptionC, InceptionE)):
            m.branch_pool.register_forward_pre_hook(_exclude_padding)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            m.weight.requires_grad_(False)  # Keras: scale=False, no gamma
    names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
             "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
             "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
    return Trunk(OrderedDict((n, getattr(net, n)) for n in names))


def _efficientnet_b4():
    import timm

    # drop_path_rate: Keras' drop_connect_rate (0.2), the same linear schedule over the blocks
    net = timm.create_model("tf_efficientnet_b4", pretrained=False, num_classes=0, global_pool="",
                            drop_path_rate=0.2)
    parts = [("normalization", EfficientNetInput())]
    parts += [(n, getattr(net, n)) for n in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")]
    return Trunk(OrderedDict(parts))


BUILDERS = {"vgg16": lambda: _vgg("vgg16"), "vgg19": lambda: _vgg("vgg19"), "resnet50": _resnet50,
            "inception_v3": _inception_v3, "efficientnet_b4": _efficientnet_b4}


def build_trunk(name: str) -> Trunk:
    """The torch network computing Keras' ``include_top=False`` output of backbone ``name``."""
    if name not in BUILDERS:
        raise ModelSpecError(f"no Keras application for backbone {name!r}; have {sorted(BUILDERS)}")
    return BUILDERS[name]()


def _attr_names(group, attr: str) -> list[str]:
    """A legacy-h5 name list (Keras splits long ones into ``attr0``, ``attr1``, ...)."""
    if attr in group.attrs:
        values = list(group.attrs[attr])
    else:
        values, k = [], 0
        while f"{attr}{k}" in group.attrs:
            values += list(group.attrs[f"{attr}{k}"])
            k += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_keras_h5(path: str | Path) -> list[tuple[str, list]]:
    """The layers with weights of a Keras weights file (legacy h5: ``model.save_weights('x.h5')``, the
    layout of the applications' files), in the file's layer order: ``[(layer name, [arrays])]``."""
    import h5py
    import numpy as np

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise KerasWeightsError(f"{path}: not an HDF5 file ({exc})") from exc
    with f:
        g = f["model_weights"] if "model_weights" in f else f  # a whole-model file keeps them there
        if "layer_names" not in g.attrs and "layer_names0" not in g.attrs:
            raise KerasWeightsError(f"{path}: no 'layer_names' attribute: not a Keras weights file "
                                    "(legacy h5, as keras.applications distributes them)")
        out = []
        for name in _attr_names(g, "layer_names"):
            names = _attr_names(g[name], "weight_names")
            if names:
                out.append((name, [np.asarray(g[name][w]) for w in names]))
    return out


def _assign(module: nn.Module, cls: str, values, where: str) -> None:
    t = [torch.from_numpy(v.copy()) for v in values]
    with torch.no_grad():
        if cls == "Conv2D":  # (h, w, in, out) -> (out, in, h, w)
            module.weight.copy_(t[0].permute(3, 2, 0, 1))
            if len(t) > 1:
                module.bias.copy_(t[1])
        elif cls == "DepthwiseConv2D":  # (h, w, channels, 1) -> (channels, 1, h, w)
            module.weight.copy_(t[0].permute(2, 3, 0, 1))
        elif cls == "BatchNormalization":  # gamma (unless scale=False), beta, moving mean, moving variance
            if len(t) == 3:
                t = [torch.ones_like(t[0])] + t
            for dst, src in zip((module.weight, module.bias, module.running_mean, module.running_var), t):
                dst.copy_(src)
        elif cls == "Normalization":  # mean, variance, count
            module.mean.copy_(t[0].reshape(-1))
            module.variance.copy_(t[1].reshape(-1))
        else:
            raise KerasWeightsError(f"{where}: Keras layer class {cls} has no torch counterpart here")


def load_keras_h5(trunk: nn.Module, backbone: str, path: str | Path) -> int:
    """Load a Keras weights file into :func:`build_trunk`'s network, as Keras'
    ``load_weights_from_hdf5_group`` does: the file's layers with weights, in order, onto the
    model's (``keras.applications``' ``model.layers``, :mod:`medrepro.keras_layers`); every count and
    shape checked. Returns the number of layers loaded."""
    saved = read_keras_h5(path)
    expected = [(n, cls, shapes) for n, cls, shapes in keras_layers.load()[backbone] if shapes]
    if len(saved) != len(expected):
        raise KerasWeightsError(f"{path}: {len(saved)} layers with weights; Keras' {backbone} (include_top=False) "
                                f"has {len(expected)}: not this backbone's no-top weights file")
    for (fname, values), (kname, cls, shapes) in zip(saved, expected):
        got = [list(v.shape) for v in values]
        if got != shapes:
            raise KerasWeightsError(f"{path}: layer {fname!r} (Keras' {kname}) holds weights of shapes {got}; "
                                    f"{backbone} expects {shapes}")
        _assign(trunk.get_submodule(keras_layers.torch_module(backbone, kname)), cls, values,
                f"{path}: layer {fname!r}")
    return len(saved)
