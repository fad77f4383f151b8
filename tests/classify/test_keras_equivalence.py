"""The transfer papers' backbones against Keras itself (Keras 3, torch backend, from the test extra).

Per backbone, Keras builds the application with seeded random weights (BatchNorm statistics, scales,
offsets and biases drawn too, so that a misplaced one shows) and writes them in the legacy ``.h5``
layout of the files ``keras.applications`` downloads; Keras then builds the application as
``weights='imagenet'`` builds it (its download pointed at that file, the one thing replaced: there is
no network here) and computes features of images after its own ``preprocess_input``; this project
loads the same file (:class:`medrepro.classify.models.Backbone`) and computes features of the same
images in [0, 1]. Tolerance: relative max difference <= 1e-4 (float32 arithmetic in two orders).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

from medrepro.backbones import KERAS_WEIGHTS  # noqa: E402
from medrepro.classify.keras_apps import KerasWeightsError, build_trunk, load_keras_h5  # noqa: E402
from medrepro.classify.models import Backbone, keras_parameter_count  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras' torch backend
TOLERANCE = 1e-4
# backbone -> (keras.applications name, its module, an input size: odd and even, small for speed but
# large enough that every block sees borders and interiors)
APPS = {"vgg16": ("VGG16", "vgg16", 64), "vgg19": ("VGG19", "vgg19", 48), "resnet50": ("ResNet50", "resnet", 70),
        "inception_v3": ("InceptionV3", "inception_v3", 139), "efficientnet_b4": ("EfficientNetB4", "efficientnet", 75)}
PREPROCESS = {"vgg16": "vgg16", "vgg19": "vgg19", "resnet50": "resnet50", "inception_v3": "inception_v3",
              "efficientnet_b4": "efficientnet"}


def keras_weights_file(backbone: str, path, size: int, seed: int = 0):
    """Keras' application with seeded random weights, saved as the applications' files are."""
    from keras.src.legacy.saving import legacy_h5_format

    app = APPS[backbone][0]
    keras.utils.set_random_seed(seed)
    keras.backend.clear_session()
    model = getattr(keras.applications, app)(weights=None, include_top=False, input_shape=(size, size, 3))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            kind, shape = w.path.split("/")[-1], tuple(w.shape)
            if kind in ("gamma", "moving_variance"):
                w.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
            elif kind in ("beta", "bias", "moving_mean"):
                w.assign(rng.normal(0.0, 0.1, shape).astype("float32"))
            elif kind == "mean":  # EfficientNet's Normalization, as Keras' file holds it
                w.assign(np.array([0.485, 0.456, 0.406], "float32").reshape(shape))
            elif kind == "variance":
                w.assign(np.array([0.229, 0.224, 0.225], "float32").reshape(shape))
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return model


def keras_imagenet_model(backbone: str, path, size: int, monkeypatch):
    """``keras.applications.<App>(weights='imagenet', include_top=False)`` with its download pointed at
    ``path``: Keras' own graph for ImageNet weights (EfficientNet's extra input rescaling included)."""
    app, module, _ = APPS[backbone]
    mod = importlib.import_module(f"keras.src.applications.{module}")
    monkeypatch.setattr(mod.file_utils, "get_file", lambda *a, **k: str(path))
    keras.backend.clear_session()
    return getattr(keras.applications, app)(weights="imagenet", include_top=False, input_shape=(size, size, 3))


def keras_reference(backbone: str, folder, monkeypatch, n: int, seed: int):
    """A random Keras weights file of ``backbone``, ``n`` random 0-255 images, and Keras' own
    feature maps of them after its ``preprocess_input`` (N, H, W, C); and the Keras model."""
    size = APPS[backbone][2]
    path = folder / f"{backbone}_notop.h5"
    keras_weights_file(backbone, path, size)
    km = keras_imagenet_model(backbone, path, size, monkeypatch)
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype("float32")
    prep = getattr(keras.applications, PREPROCESS[backbone]).preprocess_input
    want = keras.ops.convert_to_numpy(km(prep(images.copy()), training=False))
    return path, images, want, km


def rel_diff(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


@pytest.mark.parametrize("backbone", list(APPS))
def test_backbone_computes_keras_features_from_keras_weights_file(backbone, tmp_path, monkeypatch):
    size = APPS[backbone][2]
    path, images, want, km = keras_reference(backbone, tmp_path, monkeypatch, 2, 1)  # want: (N, H, W, C)
    x = torch.from_numpy(images / 255.0).float().permute(0, 3, 1, 2)
    flat = Backbone(backbone, str(path), pool="flatten", input_size=(size, size)).eval()
    with torch.no_grad():
        got = flat(x).reshape(2, want.shape[3], want.shape[1], want.shape[2]).permute(0, 2, 3, 1).numpy()
    assert got.shape == want.shape
    assert rel_diff(want, got) <= TOLERANCE, f"{backbone}: feature maps differ by {rel_diff(want, got):.2e}"
    pooled = Backbone(backbone, str(path), pool="avg").eval()  # what the papers' GlobalAveragePooling2D heads see
    with torch.no_grad():
        assert rel_diff(want.mean(axis=(1, 2)), pooled(x).numpy()) <= TOLERANCE
    # grayscale input (the X-ray sets) is the gray image repeated in three channels, as Keras is fed it
    with torch.no_grad():
        gray = pooled(x[:, :1])
        assert torch.equal(gray, pooled(x[:, :1].expand(-1, 3, -1, -1)))
    # Keras' parameter total (the model summaries print it) from the torch model
    assert keras_parameter_count(pooled.body, backbone) == km.count_params()


def test_the_comparison_sees_each_keras_difference_from_torchvision(tmp_path, monkeypatch):
    """The harness is strict enough to see what makes Keras' networks other than torchvision's:
    ResNet-50 with v1.5's strides, or Inception-V3 averaging its border windows over 9, differ."""
    for backbone, spoil in (("resnet50", "stride"), ("inception_v3", "pool")):
        path, images, want, _ = keras_reference(backbone, tmp_path, monkeypatch, 1, 2)
        want = want.mean(axis=(1, 2))
        b = Backbone(backbone, str(path), pool="avg").eval()
        if spoil == "stride":
            for layer in (b.body.layer2, b.body.layer3, b.body.layer4):
                layer[0].conv1.stride, layer[0].conv2.stride = (1, 1), (2, 2)
        else:
            for m in b.body.modules():
                m._forward_pre_hooks.clear()
        with torch.no_grad():
            got = b(torch.from_numpy(images / 255.0).float().permute(0, 3, 1, 2)).numpy()
        assert rel_diff(want, got) > 100 * TOLERANCE, backbone


def test_another_backbones_file_is_refused_by_name_and_count(tmp_path):
    path = tmp_path / "vgg16_notop.h5"
    keras_weights_file("vgg16", path, 32)
    with pytest.raises(KerasWeightsError, match=r"vgg16_notop.h5: 13 layers with weights; Keras' vgg19 .* has 16"):
        Backbone("vgg19", str(path))
    text = tmp_path / "not.h5"
    text.write_text("no HDF5 here")
    with pytest.raises(KerasWeightsError, match="not an HDF5 file"):
        load_keras_h5(build_trunk("vgg16"), "vgg16", text)
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(KerasWeightsError, match="no 'layer_names' attribute"):
        Backbone("vgg16", str(tmp_path / "empty.h5"))


def test_a_file_with_a_wrong_shape_names_the_layer(tmp_path):
    path = tmp_path / "vgg16_notop.h5"
    keras_weights_file("vgg16", path, 32)
    with h5py.File(path, "r+") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["block3_conv2"].attrs["weight_names"]]
        del f["block3_conv2"][names[1]]
        f["block3_conv2"].create_dataset(names[1], data=np.zeros(255, "float32"))
    with pytest.raises(KerasWeightsError, match=r"layer 'block3_conv2' \(Keras' block3_conv2\) holds weights of "
                                                r"shapes \[\[3, 3, 256, 256\], \[255\]\]"):
        Backbone("vgg16", str(path))


def test_keras_weight_locations_and_hashes_are_keras_own():
    """The URL and MD5 of each ``*_notop.h5`` file are those in the installed Keras' source, where
    ``keras.utils.get_file`` checks them."""
    for backbone, (app, module, _) in APPS.items():
        url, md5 = KERAS_WEIGHTS[backbone]
        mod = importlib.import_module(f"keras.src.applications.{module}")
        source = inspect.getsource(mod)
        if hasattr(mod, "WEIGHTS_PATH_NO_TOP"):
            assert url == mod.WEIGHTS_PATH_NO_TOP, backbone
            assert f'file_hash="{md5}"' in source, backbone
        else:
            key = {"resnet50": "resnet50", "efficientnet_b4": "b4"}[backbone]
            assert url.startswith(mod.BASE_WEIGHTS_PATH) and md5 == mod.WEIGHTS_HASHES[key][1], backbone
            assert url.endswith("_notop.h5")


def test_keras_weights_come_from_keras_cache_when_its_md5_matches(tmp_path, http_root):
    from medrepro.download import DownloadError, fetch_keras_weights

    root, base = http_root
    data = b"pretend h5 bytes"
    md5 = hashlib.md5(data).hexdigest()
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    (cache / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(data)
    out = fetch_keras_weights("vgg16", tmp_path / "w" / "vgg16.h5", md5=md5, cache_dirs=[cache])
    assert out.read_bytes() == data
    # a cached copy with another MD5 is not used: the download (here from loopback) is
    (cache / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"changed")
    (root / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(data)
    out = fetch_keras_weights("vgg16", tmp_path / "w2" / "vgg16.h5", md5=md5, cache_dirs=[cache],
                              url=f"{base}/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert out.read_bytes() == data
    # a download with the wrong MD5 is an error, and leaves nothing behind
    with pytest.raises(DownloadError, match="MD5 does not match"):
        fetch_keras_weights("vgg16", tmp_path / "w3" / "vgg16.h5", md5="0" * 32, cache_dirs=[],
                            url=f"{base}/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert not (tmp_path / "w3" / "vgg16.h5").exists()
    with pytest.raises(DownloadError, match="no Keras application weights for 'resnet18'"):
        fetch_keras_weights("resnet18", tmp_path / "x.h5")
