"""Keras' layer lists of the backbones: "the second half of the layers" as a Keras model counts it.

Stage 4 of transfer_multidataset ("Tutoriales para la clasificación de imágenes médicas utilizando
redes neuronales", stage 4: "La primera mitad mantuvo inhibido el entrenamiento, mientras que la
segunda mitad lo mantuvo activado") froze the first half of the base
model's layers and trained the second. In Keras that is ``base_model.layers[:n // 2]`` frozen: a
list that holds every layer (input, paddings, activations, poolings, additions, concatenations),
in Keras' graph-depth order. Its half is neither half of torch's leaf modules nor a tail of the
network in build order: in ResNet-50 the shortcut convolution of ``conv4_block1`` trains but the
block's first two convolutions do not; in Inception-V3 some branches of ``mixed5`` train and others
do not.

``keras_layers.json`` holds, per backbone, ``keras.applications``' ``include_top=False`` model's
``layers``: name, class and weight shapes, written by :func:`generate` (Keras 3, the torch
backend; the counts, 19 / 175 / 311, are those of the TensorFlow 2 Keras the thesis used). Each
Keras layer with weights maps to the torchvision module holding the same weights
(:func:`torch_module`): by name for VGG and ResNet-50, by build order for Inception-V3 (its
layers are named ``conv2d_N`` and ``batch_normalization_N`` in the order they were built, which is
torchvision's order of ``BasicConv2d`` modules). The test suite regenerates the file with Keras
and checks every mapped module's weight shapes against Keras'.

    python -m medrepro.keras_layers      # rewrite keras_layers.json (needs keras)
"""
from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

PATH = Path(__file__).with_name("keras_layers.json")
APPLICATIONS = {"vgg16": ("VGG16", 224), "vgg19": ("VGG19", 224), "resnet50": ("ResNet50", 224),
                "inception_v3": ("InceptionV3", 299), "efficientnet_b4": ("EfficientNetB4", 380)}
# backbones whose Keras layers map onto torchvision's network too (same module names); EfficientNet-B4's
# map onto Keras' network in torch only (timm's modules: weights keras)
TORCHVISION_MAPPED = {"vgg16", "vgg19", "resnet50", "inception_v3"}
# EfficientNet's Keras layers -> timm's module names (medrepro.classify.keras_apps): block 1 is a
# depthwise-separable block (expand ratio 1), the others inverted residuals
_EFFNET_TOP = {"normalization": "normalization", "stem_conv": "conv_stem", "stem_bn": "bn1", "top_conv": "conv_head",
               "top_bn": "bn2"}
_EFFNET_DS = {"dwconv": "conv_dw", "bn": "bn1", "se_reduce": "se.conv_reduce", "se_expand": "se.conv_expand",
              "project_conv": "conv_pw", "project_bn": "bn2"}
_EFFNET_IR = {"expand_conv": "conv_pw", "expand_bn": "bn1", "dwconv": "conv_dw", "bn": "bn2",
              "se_reduce": "se.conv_reduce", "se_expand": "se.conv_expand", "project_conv": "conv_pwl",
              "project_bn": "bn3"}


def generate() -> dict:
    """Each backbone's ``base_model.layers`` from Keras (imported here: an optional dependency)."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    out = {"keras": keras.__version__, "backbones": {}}
    for name, (app, size) in APPLICATIONS.items():
        keras.backend.clear_session()  # auto-names (conv2d_N) count from 0 for each model
        model = getattr(keras.applications, app)(weights=None, include_top=False, input_shape=(size, size, 3))
        out["backbones"][name] = [[layer.name, type(layer).__name__, [list(w.shape) for w in layer.weights]]
                                  for layer in model.layers]
    return out


@cache
def load() -> dict:
    return json.loads(PATH.read_text())["backbones"]


def trainable_layers(backbone: str, fraction: float = 0.5) -> list[list]:
    """The Keras layers with weights in the last ``fraction`` of ``base_model.layers``
    (``layers[:int(n * (1 - fraction))]`` frozen, as the thesis' half: ``layers[:n // 2]``)."""
    layers = load()[backbone]
    return [layer for layer in layers[int(len(layers) * (1 - fraction)):] if layer[2]]


def torch_module(backbone: str, keras_name: str) -> str:
    """The torchvision module (a name inside :class:`medrepro.classify.models.Backbone`'s ``body``) holding
    the weights of Keras layer ``keras_name``."""
    if backbone in ("vgg16", "vgg19"):
        m = re.fullmatch(r"block(\d)_conv(\d)", keras_name)
        if not m:
            raise KeyError(f"{backbone}: no torch module for Keras layer {keras_name!r}")
        convs_per_block = (2, 2, 3, 3, 3) if backbone == "vgg16" else (2, 2, 4, 4, 4)
        b, c = int(m[1]) - 1, int(m[2]) - 1
        index = sum(convs_per_block[:b]) * 2 + b + 2 * c  # conv, ReLU pairs, a pooling after each block
        return f"features.{index}"
    if backbone == "resnet50":
        if keras_name in ("conv1_conv", "conv1_bn"):
            return {"conv1_conv": "conv1", "conv1_bn": "bn1"}[keras_name]
        m = re.fullmatch(r"conv(\d)_block(\d+)_(\d)_(conv|bn)", keras_name)
        if not m:
            raise KeyError(f"{backbone}: no torch module for Keras layer {keras_name!r}")
        stage, block, k, kind = int(m[1]) - 1, int(m[2]) - 1, int(m[3]), m[4]
        if k == 0:  # the projection shortcut
            return f"layer{stage}.{block}.downsample.{0 if kind == 'conv' else 1}"
        return f"layer{stage}.{block}.{kind}{k}"
    if backbone == "inception_v3":
        m = re.fullmatch(r"(conv2d|batch_normalization)(?:_(\d+))?", keras_name)
        if not m:
            raise KeyError(f"{backbone}: no torch module for Keras layer {keras_name!r}")
        return f"{_inception_blocks()[int(m[2] or 0)]}.{'conv' if m[1] == 'conv2d' else 'bn'}"
    if backbone == "efficientnet_b4":
        if keras_name in _EFFNET_TOP:
            return _EFFNET_TOP[keras_name]
        m = re.fullmatch(r"block(\d)([a-z])_(\w+)", keras_name)
        parts = _EFFNET_DS if m and m[1] == "1" else _EFFNET_IR
        if not m or m[3] not in parts:
            raise KeyError(f"{backbone}: no torch module for Keras layer {keras_name!r}")
        return f"blocks.{int(m[1]) - 1}.{ord(m[2]) - 97}.{parts[m[3]]}"
    raise KeyError(f"no Keras layer list for backbone {backbone!r}; have {sorted(APPLICATIONS)}")


@cache
def _inception_blocks() -> list[str]:
    """torchvision Inception-V3's ``BasicConv2d`` modules in build order, up to ``Mixed_7c``
    (the auxiliary classifier, which Keras' model does not have, left out)."""
    import torchvision
    from torchvision.models.inception import BasicConv2d

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    return [n for n, mod in net.named_modules() if isinstance(mod, BasicConv2d)]


if __name__ == "__main__":
    data = generate()
    PATH.write_text(json.dumps(data, indent=0, separators=(",", ":")) + "\n")
    print(f"wrote {PATH} (keras {data['keras']}): " + ", ".join(f"{k} {len(v)} layers"
                                                                for k, v in data["backbones"].items()))
