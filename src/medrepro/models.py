"""Classifiers built from a layer list in config (no paper is hard-coded here).

A ``sequential`` model is a list of layers, each a mapping with ``type`` and
its parameters, read in Keras order and semantics:

======================= =============================================================
type                    parameters
======================= =============================================================
``conv``                ``filters``, ``kernel``, ``stride`` (1), ``padding`` (valid|same),
                        ``activation`` (none)
``maxpool``/``avgpool`` ``size``, ``stride`` (= size)
``global_avg_pool``     -
``flatten``             -
``dense``               ``units``, ``activation`` (none)
``dropout``             ``rate``
``batchnorm``           - (1-d after dense, 2-d after conv)
======================= =============================================================

Activations: none, relu, sigmoid, tanh, softmax.  The last layer should have
no activation: the loss applies sigmoid (one output unit) or softmax (one unit
per class) itself, as the ``output`` key of the model config says.

``init: glorot_uniform`` gives Keras's default initialisation (Glorot-uniform
weights, zero biases), which the Keras papers trained with; ``init: torch``
keeps PyTorch's defaults.
"""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"none": None, "linear": None, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
               "softmax": lambda: nn.Softmax(dim=1)}
LAYER_TYPES = ("conv", "maxpool", "avgpool", "global_avg_pool", "flatten", "dense", "dropout", "batchnorm")


class ModelSpecError(ValueError):
    pass


def _activation(name, where):
    if name not in ACTIVATIONS:
        raise ModelSpecError(f"{where}: activation {name!r} unknown; expected one of {sorted(ACTIVATIONS)}")
    a = ACTIVATIONS[name]
    return [a()] if a else []


def build_sequential(layers: list[dict], in_channels: int, input_size: tuple[int, int],
                     init: str = "glorot_uniform") -> nn.Sequential:
    """Build an :class:`torch.nn.Sequential` from ``layers`` for (C, H, W) inputs."""
    mods: list[nn.Module] = []
    shape = (in_channels, *input_size)  # current (C, H, W) or (F,)
    for i, spec in enumerate(layers):
        where = f"model.layers[{i}]"
        kind = spec.get("type")
        if kind not in LAYER_TYPES:
            raise ModelSpecError(f"{where}: type {kind!r} unknown; expected one of {list(LAYER_TYPES)}")
        if kind == "conv":
            if len(shape) != 3:
                raise ModelSpecError(f"{where}: conv needs an image input, got a flat vector of {shape[0]}")
            k, s = int(spec["kernel"]), int(spec.get("stride", 1))
            pad = spec.get("padding", "valid")
            if pad not in ("valid", "same"):
                raise ModelSpecError(f"{where}: padding {pad!r}; expected 'valid' or 'same'")
            padding = pad if s == 1 else (k // 2 if pad == "same" else 0)  # torch allows 'same' only at stride 1
            mods.append(nn.Conv2d(shape[0], int(spec["filters"]), k, s, padding=padding))
            mods += _activation(spec.get("activation", "none"), where)
        elif kind in ("maxpool", "avgpool"):
            size = int(spec.get("size", 2))
            cls = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
            mods.append(cls(size, int(spec.get("stride", size))))
        elif kind == "global_avg_pool":
            mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif kind == "flatten":
            mods.append(nn.Flatten())
        elif kind == "dense":
            if len(shape) != 1:
                raise ModelSpecError(f"{where}: dense needs a flat input; add a flatten or global_avg_pool layer first")
            mods.append(nn.Linear(shape[0], int(spec["units"])))
            mods += _activation(spec.get("activation", "none"), where)
        elif kind == "dropout":
            mods.append(nn.Dropout(float(spec["rate"])))
        elif kind == "batchnorm":
            mods.append(nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0]))
        try:
            with torch.no_grad():
                shape = tuple(nn.Sequential(*mods)(torch.zeros(1, in_channels, *input_size)).shape[1:])
        except RuntimeError as exc:
            raise ModelSpecError(f"{where}: the input of {list(input_size)} px is too small for this layer "
                                 f"stack ({exc})") from exc
        if any(d <= 0 for d in shape):
            raise ModelSpecError(f"{where}: the input of {list(input_size)} px is too small for this layer stack")
    model = nn.Sequential(*mods)
    if init == "glorot_uniform":
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    elif init != "torch":
        raise ModelSpecError(f"model.init {init!r}; expected 'glorot_uniform' or 'torch'")
    return model


def build_model(spec: dict, n_outputs: int | None = None) -> nn.Module:
    """Build the model an experiment's ``model`` config describes."""
    arch = spec.get("arch", "sequential")
    if arch != "sequential":
        raise ModelSpecError(f"model.arch {arch!r}; this version builds 'sequential' models")
    size = tuple(spec["input_size"])
    model = build_sequential(spec["layers"], int(spec.get("channels", 1)), size, spec.get("init", "glorot_uniform"))
    if n_outputs is not None:
        with torch.no_grad():
            out = model(torch.zeros(1, int(spec.get("channels", 1)), *size)).shape[1]
        if out != n_outputs:
            raise ModelSpecError(f"model's last layer has {out} units, but the output {spec.get('output')!r} "
                                 f"with these classes needs {n_outputs}")
    return model


def summary(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """A Keras-like summary: one row per leaf layer with its output shape and parameter count."""
    rows: list[dict] = []
    hooks = []
    for name, m in model.named_modules():
        if len(list(m.children())) == 0:
            hooks.append(m.register_forward_hook(lambda mod, _i, out, name=name: rows.append({
                "layer": f"{name} ({type(mod).__name__})",
                "output_shape": str(tuple(out.shape[1:])),
                "params": sum(p.numel() for p in mod.parameters()),
                "trainable": sum(p.numel() for p in mod.parameters() if p.requires_grad),
            })))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return rows
