"""The torchvision backbones a transfer model can stand on, and the input scaling their weights
expect (no torch import: the workflow reads this while planning)."""
from __future__ import annotations


class ModelSpecError(ValueError):
    pass


# backbone -> (the node whose output is the last feature map, its channels, constructor options)
BACKBONES = {
    "vgg16": ("features", 512, {}),
    "vgg19": ("features", 512, {}),
    "resnet50": ("layer4", 2048, {}),
    "inception_v3": ("Mixed_7c", 2048, {"aux_logits": False, "init_weights": True}),
    "efficientnet_b4": ("features", 1792, {}),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# input scalings: [0, 1] pixels -> (x - mean) / std per channel
NORMALIZATIONS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),  # torchvision's weights (and their ``transforms()``)
    "inception": ((0.5,) * 3, (0.5,) * 3),  # [-1, 1]: Inception-V3's weights (ported from TensorFlow; torchvision
    # builds the model with ``transform_input=True`` when given them, Keras' ``preprocess_input`` does the same)
    "none": ((0.0,) * 3, (1.0,) * 3),
}
# ``normalize: weights`` = the scaling each backbone's published weights were trained with
WEIGHTS_NORMALIZATION = {"inception_v3": "inception"}


def resolve_normalize(backbone: str, normalize: str = "weights") -> str:
    """The input scaling a ``model.normalize`` setting means for ``backbone``."""
    if normalize == "weights":
        return WEIGHTS_NORMALIZATION.get(backbone, "imagenet")
    if normalize not in NORMALIZATIONS:
        raise ModelSpecError(f"model.normalize {normalize!r}; expected 'weights' or one of {sorted(NORMALIZATIONS)}")
    return normalize


# What Keras' applications count as parameters that torchvision's models do not: BatchNorm's moving
# mean and variance (non-trainable weights in Keras, buffers in torch), the biases of Keras'
# ResNet-50 convolutions (torchvision's have none), and no BatchNorm scale in Keras' Inception-V3
# (torchvision keeps gamma, fixed at 1 in the ported weights).  Lets a model summary give the
# totals the Keras papers print.
KERAS_CONV_BIAS = {"resnet50"}
KERAS_BN_WITHOUT_SCALE = {"inception_v3"}
