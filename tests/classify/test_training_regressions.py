"""Training bugs that only showed with data-loader workers, on a GPU, or at the edges of a split, each
reproduced here on the CPU (each test failed before its fix): augmentations repeated across loader
workers, the tested weights, non-finite outputs, seed 0, a last batch of one image under BatchNorm,
and a detector resumed from a replaced weights file."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from medrepro.classify.models import KerasBatchNorm, build_sequential
from medrepro.classify.training import fit
from medrepro.data import ImageTable, build_augmentation

from ..conftest import demo_config, train_spec

AFFINE = [{"name": "Affine", "params": {"rotate": [-20, 20], "translate_percent": [-0.1, 0.1], "p": 1.0}}]


def _images(tmp_path, n=16, size=24) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = tmp_path / f"im{i}.png"
        Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(path)
        rows.append({"png": str(path), "target": i % 2, "image_id": f"im{i}"})
    return pd.DataFrame(rows)


def _augmented(table, workers: int, seed: int = 7) -> torch.Tensor:
    ds = ImageTable(table, (24, 24), 1, build_augmentation(AFFINE, seed))
    ds.set_epoch_seed(seed)
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers)
    return torch.cat([x for x, _ in loader])


def test_augmentations_are_distinct_across_workers_and_equal_for_any_worker_count(tmp_path):
    """albumentations 2 draws from the Compose's own generator, copied into every worker: seeded once
    per epoch, 2 workers drew 8 distinct augmentations for 16 images, 4 workers 4."""
    table = _images(tmp_path)
    # the same picture 16 times: only the augmentation tells the images apart
    table["png"] = table["png"].iloc[0]
    alone = _augmented(table, 0)
    assert len({x.numpy().tobytes() for x in alone}) == 16
    for workers in (2, 4):
        assert torch.equal(_augmented(table, workers), alone), workers
    assert not torch.equal(_augmented(table, 0, seed=8), alone)  # another epoch draws others


def test_seed_zero_with_augmentation_trains(tmp_path):
    """``train.seed: 0`` (the schema's default): the draw before the first epoch used seed -1, which
    numpy refuses (ValueError)."""
    table = _images(tmp_path)
    ds = ImageTable(table, (24, 24), 1, build_augmentation(AFFINE, 0))
    model = build_sequential([{"type": "flatten"}, {"type": "dense", "units": 1}], (1, 24, 24))
    _, hist = fit(model, ds, ImageTable(table, (24, 24), 1), train_spec(epochs=2, batch_size=8, seed=0),
                  progress=False)
    assert len(hist) == 2


def test_fit_with_loader_workers_trains_as_without(tmp_path):
    """``train.num_workers`` > 0 through ``fit`` (the demo runs with 0): the epoch loader's worker
    processes and their seeding give the same augmented batches, so the same history and weights,
    as the main process alone; a resumed run with workers ends where the uninterrupted one does."""
    table = _images(tmp_path)

    def run(workers, **kw):
        torch.manual_seed(0)
        model = build_sequential([{"type": "flatten"}, {"type": "dense", "units": 1}], (1, 24, 24))
        ds = ImageTable(table, (24, 24), 1, build_augmentation(AFFINE, 3))
        cfg = train_spec(epochs=3, batch_size=4, seed=3, num_workers=workers)
        return fit(model, ds, ImageTable(table, (24, 24), 1), cfg, progress=False, **kw)

    alone, h_alone = run(0)
    workers, h_workers = run(2)
    assert h_alone.equals(h_workers) and torch.equal(alone[1].weight, workers[1].weight)
    ck = tmp_path / "ck.pt"
    run(2, checkpoint=ck, fingerprint="w", stop_after=1)
    resumed, h_resumed = run(2, checkpoint=ck, fingerprint="w")
    assert h_resumed.equals(h_alone) and torch.equal(resumed[1].weight, alone[1].weight)


def _features(n, seed=0, d=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] > 0).long()
    return TensorDataset(x, y)


def _bn_head():
    torch.manual_seed(0)
    return build_sequential([{"type": "dense", "units": 8, "activation": "relu"}, {"type": "batchnorm"},
                             {"type": "dense", "units": 2}], (6,))


def test_a_last_training_batch_of_one_image_under_batchnorm_trains():
    """33 training rows in batches of 32: torch's BatchNorm refuses the 1-row batch; Keras normalises
    it (to the layer's offset)."""
    model, hist = fit(_bn_head(), _features(33), _features(10, 1), train_spec(epochs=2, batch_size=32),
                      progress=False)
    assert len(hist) == 2 and np.isfinite(hist["loss"]).all()


def test_batchnorm_training_step_equals_keras_batchnormalization():
    """A batch of one and a batch of five through Keras' BatchNormalization(training=True) and ours:
    the same outputs and moving statistics (Keras keeps the biased batch variance; torch's own layer
    the unbiased one, which differs by n / (n - 1))."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    ref = keras.layers.BatchNormalization()
    ref.build((None, 3))
    rng = np.random.default_rng(0)
    ref.set_weights([rng.uniform(0.5, 1.5, 3).astype("float32"), rng.normal(0, 0.1, 3).astype("float32"),
                     np.zeros(3, "float32"), np.ones(3, "float32")])
    ours = build_sequential([{"type": "batchnorm"}], (3,))[0]
    assert isinstance(ours, KerasBatchNorm)
    with torch.no_grad():
        for name, w in zip(("weight", "bias", "running_mean", "running_var"), ref.get_weights()):
            getattr(ours, name).copy_(torch.from_numpy(w))
    ours.train()
    for batch in (rng.normal(2, 3, (1, 3)), rng.normal(-1, 2, (5, 3))):
        batch = batch.astype("float32")
        want = keras.ops.convert_to_numpy(ref(batch, training=True))
        got = ours(torch.from_numpy(batch)).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.running_mean.numpy(), ref.get_weights()[2], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ours.running_var.numpy(), ref.get_weights()[3], rtol=1e-6, atol=1e-7)
    ours.eval()
    x = rng.normal(0, 1, (4, 3)).astype("float32")
    np.testing.assert_allclose(ours(torch.from_numpy(x)).detach().numpy(),
                               keras.ops.convert_to_numpy(ref(x, training=False)), rtol=1e-5, atol=1e-6)


def test_batchnorm_in_half_precision_computes_in_float32():
    """Under AMP (a GPU branch, forced here on the CPU with bfloat16 input) Keras' mixed precision keeps
    BatchNorm in float32: the output is the float32 computation cast back, the statistics float32."""
    bn = build_sequential([{"type": "batchnorm"}], (3,))[0]
    ref = build_sequential([{"type": "batchnorm"}], (3,))[0]
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    bn.train(), ref.train()
    out = bn(x)
    assert out.dtype == torch.bfloat16 and bn.running_var.dtype == torch.float32
    assert torch.equal(out, ref(x.float()).to(torch.bfloat16))
    assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)


def _run(tested, epochs=6, stop=None):
    torch.manual_seed(0)
    head = build_sequential([{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "units": 2}], (6,))
    cfg = train_spec(epochs=epochs, batch_size=8, lr=0.05, seed=3, tested_weights=tested, early_stopping=stop)
    return fit(head, _features(48), _features(24, 5), cfg, progress=False)


def test_best_tested_weights_are_the_lowest_val_loss_epochs_even_without_an_early_stop():
    """Both transfer papers load the best-val_loss checkpoint before testing. Keras' restore rule
    brings the best epoch back only on an early stop: a run that reaches its last epoch was tested
    on that epoch instead."""
    best, hist = _run("best")
    k = int(np.argmin(hist["val_loss"].to_numpy()))
    assert k < len(hist) - 1, "the test needs a run whose best epoch is not its last"
    at_k, _ = _run("last", epochs=k + 1)  # epochs are seeded by (seed, epoch): the same first k + 1
    for a, b in zip(best.state_dict().values(), at_k.state_dict().values()):
        assert torch.equal(a, b)
    last, _ = _run("last")
    restore, _ = _run("restore", stop={"patience": 50, "min_delta": 0.0, "restore_best_weights": True})
    for a, b in zip(last.state_dict().values(), restore.state_dict().values()):
        assert torch.equal(a, b)  # Keras' restore: no early stop, the last epoch's
    assert any(not torch.equal(a, b) for a, b in zip(best.state_dict().values(), last.state_dict().values()))


def test_keras_callbacks_pick_the_same_epochs_on_a_scripted_val_loss():
    """Early stopping with min_delta and the best-checkpoint rule against Keras' own EarlyStopping and
    ModelCheckpoint(save_best_only=True) fed the same val_loss sequence."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from medrepro.classify.training import EarlyStopping

    seq = [1.0, 0.9, 0.89995, 0.89992, 0.95, 0.85, 0.84995, 0.86, 0.87, 0.88, 0.9]
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=4, min_delta=1e-4)
    saved = []

    class Checkpoint(keras.callbacks.ModelCheckpoint):
        def _save_model(self, epoch, batch, logs):  # Keras' own decision; record it, write nothing
            if self._should_save_model(epoch, batch, logs, self.filepath):
                saved.append(epoch)

    ck = Checkpoint("unused.weights.h5", monitor="val_loss", save_best_only=True, save_weights_only=True)
    for cb in (stop, ck):
        cb.set_model(model)
        cb.on_train_begin()
    keras_stop, model.stop_training = None, False  # what Model.fit sets before the callbacks run
    for epoch, v in enumerate(seq):
        for cb in (stop, ck):
            cb.on_epoch_end(epoch, {"val_loss": v})
        if model.stop_training:
            keras_stop = epoch
            break
    ours, our_stop, our_best = EarlyStopping(patience=4, min_delta=1e-4, restore_best_weights=True), None, []
    best = float("inf")
    for epoch, v in enumerate(seq):
        if v < best:
            best = v
            our_best.append(epoch)
        if ours.step(v, epoch)[1]:
            our_stop = epoch
            break
    assert keras_stop == our_stop == 9
    assert saved == our_best == [0, 1, 2, 3, 5, 6]
    assert ours.best_epoch == stop.best_epoch == 5  # min_delta: 0.84995 is no improvement on 0.85


def test_non_finite_outputs_stop_training_and_prediction_with_the_run_named():
    """float16 made tk_inception_v3's probabilities NaN, which crashed the evaluation: a loss that is
    not finite stops training with the epoch, and NaN probabilities stop prediction naming the run."""
    from medrepro.classify import run
    from medrepro.specs import run_spec

    head = build_sequential([{"type": "dense", "units": 2}], (6,))
    with torch.no_grad():
        head[0].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="epoch 1: the training loss is nan"):
        fit(head, _features(16), _features(8), train_spec(epochs=2, batch_size=8), progress=False)
    spec = run_spec(demo_config()["experiments"]["tk_resnet50"])
    table = pd.DataFrame({"image_id": [f"i{k}" for k in range(8)], "target": [0, 1] * 4, "split": ["test"] * 8})
    with pytest.raises(FloatingPointError, match=r"experiment tk_x: 8 of 8 test images get NaN or infinite class "
                                                 r"probabilities \(e.g. \['i0', 'i1', 'i2'\]\)"):
        run.predict_splits(head, table, spec, lambda part: _features(len(part)), ["test"], name="experiment tk_x")


def test_amp_is_off_unless_a_run_asks_for_it():
    """AMP was on by default for every GPU training; the papers trained in float32."""
    from medrepro.specs import run_spec

    for cfg in (demo_config(), demo_config("full.yaml")):
        runs = list(cfg["experiments"].values()) + list(cfg["studies"].values())
        assert runs and not any(r["train"]["amp"] for r in runs)
    assert train_spec().amp is False and run_spec(demo_config()["experiments"]["tk_resnet50"]).train.amp is False


def test_detector_resume_fingerprint_reads_the_weights_files_bytes(tmp_path):
    """A weights file replaced at the same path (same name, same tensor count) is another start."""
    from medrepro.detect.dataset import resume_fingerprint
    from medrepro.specs import run_spec

    spec = run_spec(demo_config()["experiments"]["mr_exp1"])
    w = tmp_path / "maskrcnn.pth"
    torch.save({"a": torch.zeros(3)}, w)
    first = resume_fingerprint(spec, str(w), "data")
    torch.save({"a": torch.ones(3)}, w)
    assert resume_fingerprint(spec, str(w), "data") != first
    assert resume_fingerprint(spec, str(w), "data") == resume_fingerprint(spec, str(w), "data")
    assert resume_fingerprint(spec, None, "data") != first
