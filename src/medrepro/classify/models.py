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
``batchnorm``           ``momentum`` (0.99), ``epsilon`` (1e-3): Keras' meaning and defaults
                        (1-d after dense, 2-d after conv)
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

from ..backbones import (
    BACKBONES,
    BGR,
    KERAS_BN_WITHOUT_SCALE,
    KERAS_CONV_BIAS,
    NORMALIZATIONS,
    ModelSpecError,
    resolve_normalize,
    weights_kind,
)
from ..specs import ModelSpec, layer_specs
from .keras_apps import EfficientNetInput

ACTIVATIONS = {"none": None, "linear": None, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
               "softmax": lambda: nn.Softmax(dim=1)}
KERAS_BN_MOMENTUM, KERAS_BN_EPS = 0.99, 1e-3  # keras.layers.BatchNormalization's defaults
LAYER_TYPES = ("conv", "maxpool", "avgpool", "global_avg_pool", "flatten", "dense", "dropout", "batchnorm",
               "normalization")


class Normalization(nn.Module):
    """Keras' ``layers.Normalization`` on feature vectors: ``(x - mean) / max(sqrt(var), epsilon)``, per
    feature, with the mean and (population) variance taken from data by :meth:`adapt` (Keras'
    ``adapt``), then fixed: no weights, nothing learnt by gradient.  ``epsilon`` is Keras' 1e-7 by
    default; 0 divides by the standard deviation whatever its scale (a constant feature stays 0),
    for features far below 1e-7 such as a random-init EfficientNet-B4's (about 1e-15).
    :func:`medrepro.classify.training.fit` adapts every not-yet-adapted layer to its training inputs
    before the first epoch; the statistics travel in the state dict, so a resumed or reloaded model
    keeps them."""

    def __init__(self, features: int, epsilon: float = 1e-7):
        super().__init__()
        self.epsilon = float(epsilon)
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("variance", torch.ones(features))
        self.register_buffer("adapted", torch.zeros((), dtype=torch.bool))

    def adapt(self, total: torch.Tensor, total_sq: torch.Tensor, count: int) -> None:
        """Set the statistics from per-feature sums of x and x**2 (float64) over ``count`` rows."""
        if count < 1:
            raise ValueError("normalization layer: no training rows to adapt to")
        mean = total / count
        self.mean.copy_(mean.to(self.mean.dtype))
        self.variance.copy_((total_sq / count - mean**2).clamp_min(0).to(self.variance.dtype))
        self.adapted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sd = self.variance.sqrt()
        if self.epsilon > 0:
            return (x - self.mean) / sd.clamp_min(self.epsilon)
        return (x - self.mean) / torch.where(sd > 0, sd, torch.ones_like(sd))  # constant features stay 0



class KerasBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Keras' ``BatchNormalization`` in training: the batch's mean and (biased) variance normalise it,
    and the moving statistics follow ``moving = momentum * moving + (1 - momentum) * batch`` with the
    biased variance too (torch's BatchNorm keeps the unbiased one, n / (n - 1) larger, and refuses a
    batch of one sample, which Keras normalises to its offset ``beta``: a last training batch of one
    image). In inference, the moving statistics, as torch's. ``momentum`` here is torch's
    (1 - Keras'); weights, buffers and state-dict keys are torch's BatchNorm's."""

    def _check_input_dim(self, x):
        if x.dim() not in (2, 4):
            raise ValueError(f"KerasBatchNorm expects a 2-d or 4-d input, got {x.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if x.dtype in (torch.float16, torch.bfloat16):  # Keras' mixed precision keeps BatchNorm in float32
            return self.forward(x.float()).to(x.dtype)
        if not self.training:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            False, 0.0, self.eps)
        dims = [0] if x.dim() == 2 else [0, 2, 3]
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(var.detach().to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked.add_(1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def _activation(name, where):
    if name not in ACTIVATIONS:
        raise ModelSpecError(f"{where}: activation {name!r} unknown; expected one of {sorted(ACTIVATIONS)}")
    a = ACTIVATIONS[name]
    return [a()] if a else []


def _or(value, keras_default):
    """A layer setting, or Keras' default for it where the config leaves it out (``None``)."""
    return keras_default if value is None else value


def build_sequential(layers, input_shape: tuple[int, ...], init: str = "glorot_uniform") -> nn.Sequential:
    """Build an :class:`torch.nn.Sequential` from ``layers`` (:class:`~medrepro.specs.LayerSpec`, or
    the config's mappings) for inputs of ``input_shape``: (C, H, W) images or (F,) feature vectors.
    A setting left out takes Keras' default for the layer.  A ``dense`` layer with ``l2`` carries
    that factor as ``module.l2``: :func:`regularization_loss` adds ``l2 * sum(W**2)`` (Keras' ``l2``)."""
    mods: list[nn.Module] = []
    input_shape = tuple(input_shape)
    shape = input_shape  # current (C, H, W) or (F,)
    for i, spec in enumerate(layer_specs(layers)):
        where = f"model.layers[{i}]"
        if spec.type not in LAYER_TYPES:
            raise ModelSpecError(f"{where}: type {spec.type!r} unknown; expected one of {list(LAYER_TYPES)}")
        mods += _layer(spec, shape, where)
        try:
            with torch.no_grad():
                probe = nn.Sequential(*mods)
                probe.eval()
                shape = tuple(probe(torch.zeros(1, *input_shape)).shape[1:])
        except RuntimeError as exc:
            raise ModelSpecError(f"{where}: the input of {list(input_shape)} is too small for this layer "
                                 f"stack ({exc})") from exc
        if any(d <= 0 for d in shape):
            raise ModelSpecError(f"{where}: the input of {list(input_shape)} is too small for this layer stack")
    model = nn.Sequential(*mods)
    if init == "glorot_uniform":
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    elif init != "torch":
        raise ModelSpecError(f"model.init {init!r}; expected 'glorot_uniform' or 'torch'")
    return model


def _layer(spec, shape: tuple[int, ...], where: str) -> list[nn.Module]:
    """The modules of one layer ``spec`` on inputs of ``shape`` (Keras' defaults for what it leaves out)."""
    kind = spec.type
    if kind == "conv":
        if len(shape) != 3:
            raise ModelSpecError(f"{where}: conv needs an image input, got a flat vector of {shape[0]}")
        k, s = spec.kernel, _or(spec.stride, 1)
        pad = _or(spec.padding, "valid")
        if pad not in ("valid", "same"):
            raise ModelSpecError(f"{where}: padding {pad!r}; expected 'valid' or 'same'")
        padding = pad if s == 1 else (k // 2 if pad == "same" else 0)  # torch allows 'same' only at stride 1
        conv = nn.Conv2d(shape[0], spec.filters, k, s, padding=padding)
        return [conv, *_activation(_or(spec.activation, "none"), where)]
    if kind in ("maxpool", "avgpool"):
        size = _or(spec.size, 2)
        return [(nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)(size, _or(spec.stride, size))]
    if kind == "global_avg_pool":
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if kind == "flatten":
        return [nn.Flatten()]
    if kind == "dense":
        if len(shape) != 1:
            raise ModelSpecError(f"{where}: dense needs a flat input; add a flatten or global_avg_pool layer first")
        dense = nn.Linear(shape[0], spec.units)
        if spec.l2:
            dense.l2 = float(spec.l2)
        return [dense, *_activation(_or(spec.activation, "none"), where)]
    if kind == "dropout":
        return [nn.Dropout(float(spec.rate))]
    if kind == "batchnorm":
        # Keras' BatchNormalization: momentum 0.99 (torch counts the other way: 0.01), epsilon 1e-3
        eps = float(_or(spec.epsilon, KERAS_BN_EPS))
        if eps <= 0:
            raise ModelSpecError(f"{where}: batchnorm epsilon must be above 0, got {spec.epsilon}")
        return [KerasBatchNorm(shape[0], eps=eps, momentum=1.0 - float(_or(spec.momentum, KERAS_BN_MOMENTUM)))]
    if len(shape) != 1:  # normalization
        raise ModelSpecError(f"{where}: normalization needs a flat input (feature vectors)")
    return [Normalization(shape[0], float(_or(spec.epsilon, 1e-7)))]


def regularization_loss(model: nn.Module) -> torch.Tensor | float:
    """Sum of ``l2 * sum(W**2)`` over the layers that carry an ``l2`` factor (0 when none)."""
    terms = [m.l2 * m.weight.pow(2).sum() for m in model.modules() if getattr(m, "l2", 0)]
    return sum(terms) if terms else 0.0


def l2_penalty(model: nn.Module) -> float:
    """The value of :func:`regularization_loss` now (what Keras adds to a reported loss)."""
    with torch.no_grad():
        return float(regularization_loss(model))



class Backbone(nn.Module):
    """A pretrained classifier cut before its head: image in [0, 1] -> pooled feature vector.

    ``weights`` is a local weights file or None for a seeded random initialisation. A Keras
    weights file (``.h5``, the applications' ``*_notop.h5``) builds the Keras application's network
    (:mod:`medrepro.classify.keras_apps`: Keras' ResNet-50 v1, Inception-V3 and EfficientNet-B4 are
    not torchvision's) and loads it as Keras does; anything else is torchvision's network, with a
    torchvision state-dict file (e.g. ``resnet50-11ad3fa6.pth``) or random weights.
    Grayscale inputs are repeated to three channels; ``normalize: weights`` scales them as the
    weights expect (torchvision's: ImageNet mean/std, [-1, 1] for Inception-V3; Keras': each
    application's ``preprocess_input``, :data:`~medrepro.backbones.KERAS_PREPROCESS`), or one scaling
    of :data:`~medrepro.backbones.NORMALIZATIONS` is forced. When ``frozen``, its parameters take no
    gradient and it stays in inference mode (BatchNorm uses its running statistics), as a
    Keras base model with ``trainable = False``.
    """

    def __init__(self, name: str, weights: str | None = None, frozen: bool = True, normalize: str = "weights",
                 seed: int = 0, pool: str = "avg", input_size: tuple[int, int] | None = None):
        super().__init__()
        if name not in BACKBONES:
            raise ModelSpecError(f"model.backbone {name!r}; expected one of {sorted(BACKBONES)}")
        node, self.dim, kw = BACKBONES[name]
        self.name = name
        self.kind = weights_kind(weights)
        self.pretrained = weights is not None
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if self.kind == "keras":
                from .keras_apps import build_trunk, load_keras_h5

                self.body = build_trunk(name)
                load_keras_h5(self.body, name, weights)
            else:
                self.body = _torchvision_body(name, node, kw, weights)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.normalize = resolve_normalize(name, normalize, self.kind)
        mean, std = NORMALIZATIONS[self.normalize]
        self.bgr = self.normalize in BGR
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.frozen = frozen
        if frozen:
            for p in self.body.parameters():
                p.requires_grad_(False)
        if pool not in ("avg", "flatten"):
            raise ModelSpecError(f"model.pool {pool!r}; expected 'avg' or 'flatten'")
        self.pool_mode = pool
        if pool == "flatten":  # a Keras Flatten of the last feature map: its size depends on the input's
            if not input_size:
                raise ModelSpecError("model.pool 'flatten' needs model.input_size")
            was = self.body.training
            self.body.eval()
            with torch.no_grad():
                self.dim = int(self.body(torch.zeros(1, 3, *input_size))["features"][0].numel())
            self.body.train(was)
        self.train()  # a frozen body starts (and stays) in inference mode

    def layers(self) -> list[nn.Module]:
        """The backbone's leaf modules in order (Keras' ``base_model.layers``, without the input layer)."""
        return [m for m in self.body.modules() if len(list(m.children())) == 0]

    def unfreeze_last(self, fraction: float = 0.5, count: str = "keras") -> int:
        """Let the last ``fraction`` of the backbone's layers train; returns their parameter count.

        ``count: keras`` counts Keras' ``base_model.layers`` (every layer, activations, paddings,
        poolings and merges included, in Keras' order: :mod:`medrepro.keras_layers`) and unfreezes the
        torchvision modules of the Keras layers with weights in that part; Inception-V3's BatchNorm
        has no scale in Keras, so its gamma (1 in the ported weights) stays fixed.  ``count: torch``
        counts :meth:`layers`, torch's leaf modules.  BatchNorm stays in inference mode either way,
        as in Keras fine-tuning of a base model called with ``training=False``."""
        if count == "keras":
            from .. import keras_layers

            modules = [self.body.get_submodule(keras_layers.torch_module(self.name, layer[0]))
                       for layer in keras_layers.trainable_layers(self.name, fraction)]
        elif count == "torch":
            layers = self.layers()
            modules = layers[len(layers) - int(round(len(layers) * fraction)):]
        else:
            raise ModelSpecError(f"fine_tune.count_layers {count!r}; expected 'keras' or 'torch'")
        no_scale = count == "keras" and self.name in KERAS_BN_WITHOUT_SCALE
        n = 0
        for m in modules:
            for pname, p in m.named_parameters():
                if no_scale and isinstance(m, nn.BatchNorm2d) and pname == "weight":
                    continue
                p.requires_grad_(True)
                n += p.numel()
        return n

    def train(self, mode: bool = True):
        super().train(mode and not self.frozen)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        if self.bgr:
            x = x.flip(1)
        f = self.body(x)["features"]
        return torch.flatten(self.pool(f) if self.pool_mode == "avg" else f, 1)


def _torchvision_body(name: str, node: str, kw: dict, weights: str | None) -> nn.Module:
    """torchvision's network ``name`` up to ``node``, from a state-dict file or random weights."""
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    net = getattr(torchvision.models, name)(weights=None, **kw)
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(("fc.", "classifier.", "AuxLogits."))]
        if missing:
            raise ModelSpecError(f"{weights}: not a {name} state dict (missing {missing[:3]} ...)")
    return create_feature_extractor(net, {node: "features"})


class TransferNet(nn.Module):
    """A backbone and a head; ``forward(x) = head(backbone(x))``.  A rank-2 ``x`` is the backbone's
    output already (rows of a features file, :mod:`medrepro.classify.features`): the head alone
    takes it, so a frozen backbone's unaugmented inputs need not pass through it again."""

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        return self.head(x if x.dim() == 2 else self.backbone(x))


def build_head(spec: ModelSpec, feature_dim: int, seed: int = 0) -> nn.Sequential:
    """The head of a transfer model, seeded on its own so it is the same with or without a backbone."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_sequential(spec.head, (feature_dim,), spec.init)


def build_backbone(spec: ModelSpec, weights: str | None = None, seed: int = 0) -> Backbone:
    return Backbone(spec.backbone, weights, spec.freeze, spec.normalize, seed, spec.pool, spec.input_size)


def build_model(spec: ModelSpec, n_outputs: int | None = None, weights: str | None = None, seed: int = 0
                ) -> nn.Module:
    """Build the model a run's ``model`` block (or its :class:`ModelSpec`) describes (``sequential``
    or ``transfer``)."""
    arch = spec.arch
    size = spec.input_size
    channels = spec.channels
    if arch == "sequential":
        model = build_sequential(spec.layers, (channels, *size), spec.init)
    elif arch == "transfer":
        backbone = build_backbone(spec, weights, seed)
        model = TransferNet(backbone, build_head(spec, backbone.dim, seed))
    else:
        raise ModelSpecError(f"model.arch {arch!r}; expected 'sequential' or 'transfer'")
    if n_outputs is not None:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, channels, *size)).shape[1]
        if out != n_outputs:
            raise ModelSpecError(f"model's last layer has {out} units, but the output {spec.output!r} "
                                 f"with these classes needs {n_outputs}")
    return model


def keras_parameter_count(model: nn.Module, backbone: str | None = None) -> int:
    """The parameter total Keras would print for ``model`` (see ``backbones.KERAS_CONV_BIAS``):
    BatchNorm's moving statistics count, ``backbone``'s Keras-only conv biases are added and
    its Keras-absent BatchNorm scales removed."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n += 2 * m.num_features  # moving mean and variance
            if backbone in KERAS_BN_WITHOUT_SCALE and m.weight is not None:
                n -= m.num_features
        elif isinstance(m, (Normalization, EfficientNetInput)):
            n += 2 * m.mean.numel() + 1  # Keras' mean, variance and count weights
        elif isinstance(m, nn.Conv2d) and m.bias is None and backbone in KERAS_CONV_BIAS:
            n += m.out_channels
    return n


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
