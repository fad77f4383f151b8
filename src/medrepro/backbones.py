"""The backbones a transfer model can stand on, the input scaling their weights expect, and where
Keras' weights come from (no torch import: the workflow reads this while planning).

A backbone has two implementations, chosen by its weights (:func:`weights_kind`): torchvision's
networks for torchvision's weights and for a random initialisation, and the Keras applications'
networks (:mod:`medrepro.classify.keras_apps`) for Keras' ImageNet weights (``weights: keras`` or a
``.h5`` file), which the two transfer papers used."""
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
    # Keras' preprocess_input(mode='caffe') of VGG and ResNet-50: 0-255 pixels, ImageNet's mean
    # pixel subtracted, channels in BGR order (:data:`BGR`)
    "caffe": (tuple(m / 255.0 for m in (123.68, 116.779, 103.939)), (1.0 / 255.0,) * 3),
    # 0-255 pixels: what Keras' EfficientNet takes (it rescales and normalises inside the model)
    "pixels": ((0.0,) * 3, (1.0 / 255.0,) * 3),
}
BGR = {"caffe"}  # scalings that also reverse the channel order (RGB -> BGR)
# ``normalize: weights`` = the scaling each backbone's published weights were trained with
WEIGHTS_NORMALIZATION = {"inception_v3": "inception"}
# ... and for Keras' weights, each application's own ``preprocess_input``
KERAS_PREPROCESS = {"vgg16": "caffe", "vgg19": "caffe", "resnet50": "caffe", "inception_v3": "inception",
                    "efficientnet_b4": "pixels"}

# The Keras applications' ImageNet weights without the classifier (``include_top=False``): the URL
# and the MD5 that ``keras.utils.get_file`` checks, as keras.applications has them (the test suite
# compares both with the installed Keras' source)
_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_WEIGHTS = {
    "vgg16": (_KERAS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc"),
    "vgg19": (_KERAS + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "253f8cb515780f3b799900260a226db6"),
    "resnet50": (_KERAS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "4d473c1dd8becc155b73f8504c6f6626"),
    "inception_v3": (_KERAS + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "bcbd6486424b2319ff4ef7d526e38f63"),
    "efficientnet_b4": ("https://storage.googleapis.com/keras-applications/efficientnetb4_notop.h5",
                        "ebc24e6d6c33eaebbd558eafbeedf1ba"),
}


def weights_kind(weights: str | None) -> str:
    """``keras`` for Keras' weights (the setting ``keras``, or a ``.h5`` file), else ``torchvision``
    (torchvision's weights, a ``.pth`` file, or none: a random initialisation of torchvision's network)."""
    if weights and (weights == "keras" or str(weights).lower().endswith((".h5", ".hdf5"))):
        return "keras"
    return "torchvision"


def resolve_normalize(backbone: str, normalize: str = "weights", kind: str = "torchvision") -> str:
    """The input scaling a ``model.normalize`` setting means for ``backbone`` with weights of ``kind``
    (:func:`weights_kind`)."""
    if normalize == "weights":
        if kind == "keras":
            return KERAS_PREPROCESS[backbone]
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
