"""GPU-only branches, forced on the CPU: channels-last, AMP and its scaler across a resume,
pinned memory and non-blocking copies; and a GPU job that finds no GPU stops."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from medrepro import accel as accel_mod
from medrepro.accel import Accel, DeviceError, describe, deterministic_setting, from_train, resolve, summary_rows
from medrepro.classify.training import fit, predict_proba
from medrepro.specs import run_spec

from .conftest import demo_config, train_spec
from .detect.test_maskrcnn import _coco, _experiment, rsna  # noqa: F401  (rsna: a fixture of real synthetic RSNA files)

# every flag that the CUDA path turns on, on the CPU
GPU_LIKE = Accel(torch.device("cpu"), amp=True, channels_last=True, pin_memory=True, non_blocking=True)


def _features(n=48, dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, dim, generator=g)
    x[torch.arange(n), y] += 3.0
    ds = TensorDataset(x, y)
    ds.targets = y.numpy()
    return ds


def _head(dim=12):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, 3))


def test_cached_features_train_with_every_gpu_flag():
    """Rank-2 feature batches with channels-last on (it used to raise 'required rank 4 tensor')."""
    ds = _features()
    model, hist = fit(_head(), ds, ds, train_spec(epochs=3, batch_size=16, lr=1e-2, seed=1), progress=False,
                      accel=GPU_LIKE)
    assert len(hist) == 3 and "amp_scale" in hist and hist["accuracy"].iloc[-1] > 0.6
    proba = predict_proba(model, ds, accel=GPU_LIKE)
    assert proba.shape == (48, 3) and abs(proba.sum(1) - 1).max() < 1e-2


def test_image_batches_go_channels_last():
    x = torch.rand(2, 3, 8, 8)
    assert GPU_LIKE.batch(x).is_contiguous(memory_format=torch.channels_last)
    assert GPU_LIKE.batch(torch.rand(2, 5)).shape == (2, 5)  # other ranks pass unchanged


def test_a_convolutional_model_trains_the_same_in_either_memory_format():
    """channels-last (on by default, CPU included) changes only float rounding: a Flatten after the
    convolutions reads the logical NCHW order, so the dense layer sees the same features."""
    from medrepro.classify.models import build_sequential

    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 16, 16, generator=g)
    y = torch.arange(24) % 2
    x[y == 1, :, 4:10, 4:10] += 0.5
    ds = TensorDataset(x, y)
    ds.targets = y.numpy()
    layers = [{"type": "conv", "filters": 4, "kernel": 3, "activation": "relu"}, {"type": "maxpool", "size": 2},
              {"type": "flatten"}, {"type": "dense", "units": 2}]
    runs = {}
    for cl in (False, True):
        torch.manual_seed(0)
        model = build_sequential(layers, (1, 16, 16), "glorot_uniform")
        cfg = train_spec(epochs=2, batch_size=8, lr=1e-2, seed=1, channels_last=cl)
        model, hist = fit(model, ds, ds, cfg, progress=False)
        assert from_train(cfg).channels_last is cl
        runs[cl] = (predict_proba(model, ds, accel=from_train(cfg)), hist["loss"].to_numpy())
    assert torch.allclose(torch.as_tensor(runs[True][0]), torch.as_tensor(runs[False][0]), atol=1e-4)
    assert abs(runs[True][1] - runs[False][1]).max() < 1e-4


def test_amp_scaler_state_survives_a_resume(tmp_path):
    """The scaler's scale is checkpointed and restored: a resumed run continues from the saved
    scale, not from a fresh scaler's 65536."""
    ds = _features()
    cfg = train_spec(epochs=3, batch_size=16, lr=1e-2, seed=1)
    ck = tmp_path / "ck.pt"
    _, first = fit(_head(), ds, ds, cfg, checkpoint=ck, progress=False, stop_after=1, accel=GPU_LIKE)
    saved = torch.load(ck, weights_only=False)
    assert saved["scaler"]["scale"] == first["amp_scale"].iloc[-1]
    saved["scaler"]["scale"] = 1024.0  # as if earlier overflows had lowered it
    torch.save(saved, ck)
    _, hist = fit(_head(), ds, ds, cfg, checkpoint=ck, progress=False, accel=GPU_LIKE)
    assert len(hist) == 3 and hist["amp_scale"].iloc[1] == 1024.0
    _, fresh = fit(_head(), ds, ds, cfg, progress=False, accel=GPU_LIKE)
    assert fresh["amp_scale"].iloc[1] == 65536.0


def test_a_gpu_job_without_a_gpu_stops_with_the_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"asked for 1 GPU\(s\).*torch .* built for CUDA.*allow_cpu"):
        resolve("auto", gpus=1)
    with pytest.raises(DeviceError, match="train.device is 'cuda'"):
        resolve("cuda")
    assert resolve("auto", gpus=1, allow_cpu=True).device.type == "cpu"
    # on the CPU: no AMP, pinned memory or asynchronous copies; channels-last as the setting says
    train = run_spec(demo_config()["experiments"]["cnn_kermany"]).train
    assert train.device == "auto" and not train.amp and train.channels_last  # AMP: a choice, off by default
    assert from_train(train) == Accel(torch.device("cpu"), channels_last=True)
    assert not from_train(dataclasses.replace(train, channels_last=False)).channels_last
    assert not from_train(train, channels_last=False).channels_last
    with pytest.raises(DeviceError):
        fit(_head(), _features(), _features(), train_spec(epochs=1, gpus=1), progress=False)


def test_the_cuda_path_turns_every_flag_on(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    a = resolve("auto", gpus=1, amp=True)
    assert a.device.type == "cuda" and a.amp and a.channels_last and a.pin_memory and a.non_blocking
    assert not resolve("auto", gpus=1, amp=False).amp


def test_runtime_is_recorded():
    info = describe(GPU_LIKE)
    assert info["torch"] == torch.__version__ and info["amp"] is True and info["device"] == "cpu"
    assert {"gpu", "cuda", "cudnn", "threads", "slurm_job"} <= set(info)
    # the CPU and the instruction set of torch's kernels: CPU runs repeat bit for bit on the same one
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and info["cpu"]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        assert info["cpu"] in cpuinfo.read_text()
    rows = summary_rows(GPU_LIKE)
    assert {r["layer"] for r in rows} >= {"runtime: device", "runtime: torch", "runtime: cuda", "runtime: amp",
                                          "runtime: cpu_capability"}
    assert "device=cpu" in accel_mod.log_line(GPU_LIKE)


def test_deterministic_auto_turns_off_only_for_roi_align_models_on_a_gpu():
    """With deterministic algorithms on, torchvision replaces its CUDA RoIAlign by a pure-torch one
    (on an H100, Mask R-CNN at 1,024 px, batch 12: 22 s per iteration, then out of its 80 GB):
    ``auto`` keeps them on everywhere else, and an explicit setting wins."""
    import importlib
    import inspect

    tv_roi = importlib.import_module("torchvision.ops.roi_align")  # the module (the package exports the function)

    cuda, cpu = Accel(torch.device("cuda")), Accel(torch.device("cpu"))
    assert deterministic_setting("auto", cuda, roi_align=True) is False
    assert deterministic_setting("auto", cpu, roi_align=True) is True
    assert deterministic_setting("auto", cuda) is True
    assert deterministic_setting(True, cuda, roi_align=True) is True
    assert deterministic_setting(False, cpu) is False
    with pytest.raises(ValueError, match="train.deterministic 'yes'"):
        deterministic_setting("yes", cpu)
    # the premise: torchvision's switch to the pure-torch RoIAlign (if it goes, so can this exception)
    assert "are_deterministic_algorithms_enabled() and (input.is_cuda" in inspect.getsource(tv_roi.roi_align)


def test_the_deterministic_setting_is_applied_and_recorded(capsys):
    ds = _features()
    for setting in (False, True):
        fit(_head(), ds, ds, train_spec(epochs=1, batch_size=16, seed=1, deterministic=setting), progress=False,
            accel=GPU_LIKE)
        assert torch.are_deterministic_algorithms_enabled() is setting
        assert torch.backends.cudnn.benchmark is (not setting)  # cuDNN autotuning only when not deterministic
        assert f"deterministic={setting}" in capsys.readouterr().err


def test_detector_trains_and_resumes_with_every_gpu_flag(rsna, tmp_path):  # noqa: F811 - the fixture
    """Mask R-CNN with AMP (bfloat16 autocast on the CPU) and non-blocking copies; the scaler is
    checkpointed and a resumed run ends with the uninterrupted run's history; the warm-up's
    scheduler steps beside the scaler and resumes with it."""
    from medrepro.detect.torchvision_backend import train_detector

    e = run_spec(_experiment(warmup_iterations=3))
    tr, va = _coco(rsna, "train"), _coco(rsna, "val")
    ck = tmp_path / "ck.pt"
    train_detector(tr, va, e, None, None, checkpoint=ck, stop_after=1, accel=GPU_LIKE)
    assert torch.load(ck, weights_only=False)["scaler"]["scale"] == 65536.0
    _, hist, _ = train_detector(tr, va, e, None, None, checkpoint=ck, accel=GPU_LIKE)
    _, full, _ = train_detector(tr, va, e, None, None, accel=GPU_LIKE)
    assert len(hist) == 2 and hist["amp_scale"].tolist() == full["amp_scale"].tolist()
    assert hist["loss"].tolist() == full["loss"].tolist()
    assert hist["lr"].tolist() == full["lr"].tolist() == [e.train.lr * (2 / 3), e.train.lr]
