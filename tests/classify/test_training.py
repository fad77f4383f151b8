"""Models built from config, seeded and resumable training, Keras-like callbacks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from medrepro.classify.models import ModelSpecError, build_model, summary
from medrepro.classify.training import EarlyStopping, class_weights, fit
from medrepro.specs import model_spec

from ..conftest import REPO, demo_config, train_spec


def _kermany_model_block(size=64):
    return {**demo_config()["experiments"]["cnn_kermany"]["model"], "input_size": [size, size]}


def _kermany_model_spec(size=64):
    return model_spec(_kermany_model_block(size))


def test_cnn_kermany_parameter_count():
    model = build_model(_kermany_model_spec(64), n_outputs=1)
    # by hand: conv 1->32, 32->64, 64->64 (3x3), 64 px -> 62 -> 31 -> 29 -> 27 -> 13, flatten 64*13*13
    expected = (9 * 1 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 64 + 64) + (64 * 13 * 13 * 128 + 128) \
        + (128 * 128 + 128) + (128 + 1)
    assert sum(p.numel() for p in model.parameters()) == expected == 1456961
    rows = summary(model, (1, 64, 64))
    assert sum(r["params"] for r in rows) == expected
    assert rows[-1]["output_shape"] == "(1,)"
    # Keras initialisation: zero biases
    biases = [m.bias for m in model.modules() if getattr(m, "bias", None) is not None]
    assert biases and all(float(b.detach().abs().sum()) == 0 for b in biases)


def test_model_spec_errors():
    block = _kermany_model_block(64)
    with pytest.raises(ModelSpecError, match="needs 3"):
        build_model(model_spec(block), n_outputs=3)
    bad = model_spec({**block, "layers": [{"type": "dense", "units": 4}]})
    with pytest.raises(ModelSpecError, match=r"layers\[0\]: dense needs a flat input"):
        build_model(bad)
    tiny = model_spec({**block, "input_size": [8, 8]})
    with pytest.raises(ModelSpecError, match="too small"):
        build_model(tiny)


def _toy_data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.5
    x[y == 1, :, 4:10, 4:10] += 0.5  # a bright square marks class 1
    return TensorDataset(x[: n * 3 // 4], y[: n * 3 // 4]), TensorDataset(x[n * 3 // 4:], y[n * 3 // 4:])


def _toy_model():
    spec = {"arch": "sequential", "init": "glorot_uniform", "input_size": [16, 16], "channels": 1, "output": "sigmoid",
            "freeze": True, "pool": "avg", "normalize": "weights",  # the schema's defaults (transfer models' keys)
            "layers": [{"type": "conv", "filters": 4, "kernel": 3, "activation": "relu"},
                       {"type": "maxpool", "size": 2}, {"type": "flatten"},
                       {"type": "dense", "units": 8, "activation": "relu"}, {"type": "dropout", "rate": 0.3},
                       {"type": "dense", "units": 1}]}
    torch.manual_seed(0)
    return build_model(model_spec(spec), 1)


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_same_seed_same_result():
    tr, va = _toy_data()
    cfg = train_spec(epochs=4, batch_size=16, lr=1e-2, seed=5, device="cpu")
    m1, h1 = fit(_toy_model(), tr, va, cfg, progress=False)
    m2, h2 = fit(_toy_model(), tr, va, cfg, progress=False)
    assert h1.equals(h2) and torch.equal(_weights(m1), _weights(m2))
    assert h1["val_accuracy"].iloc[-1] > 0.8  # the toy signal is learnt


def test_resume_equals_uninterrupted(tmp_path):
    tr, va = _toy_data()
    cfg = train_spec(epochs=5, batch_size=16, lr=1e-2, seed=3, device="cpu")
    full, h_full = fit(_toy_model(), tr, va, cfg, progress=False)
    ck = tmp_path / "ck.pt"
    fit(_toy_model(), tr, va, cfg, checkpoint=ck, fingerprint="a", progress=False, stop_after=2)
    assert ck.is_file()
    resumed, h_res = fit(_toy_model(), tr, va, cfg, checkpoint=ck, fingerprint="a", progress=False)
    assert torch.equal(_weights(full), _weights(resumed))
    assert h_full.equals(h_res)
    # a checkpoint of another config is ignored: training starts over and still matches
    other, _ = fit(_toy_model(), tr, va, cfg, checkpoint=ck, fingerprint="b", progress=False)
    assert torch.equal(_weights(full), _weights(other))


def test_early_stopping_on_a_scripted_curve():
    es = EarlyStopping(patience=3, min_delta=0.01, restore_best_weights=True)
    curve = [1.0, 0.8, 0.795, 0.79, 0.7, 0.71, 0.695, 0.70, 0.69]
    stops = [es.step(v, e)[1] for e, v in enumerate(curve)]
    # 0.7 at epoch 4 is the last improvement larger than 0.01; 3 epochs later it stops
    assert stops.index(True) == 7 and es.best_epoch == 4 and es.best == 0.7


def test_early_stopping_restores_best_weights():
    tr, va = _toy_data()
    cfg = train_spec(epochs=30, batch_size=16, lr=5e-2, seed=1, device="cpu",
                      early_stopping={"patience": 2, "min_delta": 0.0, "restore_best_weights": True})
    model, hist = fit(_toy_model(), tr, va, cfg, progress=False)
    assert len(hist) < 30
    from torch.utils.data import DataLoader

    from medrepro.accel import Accel
    from medrepro.classify.training import _loss_fn, evaluate_loss

    loss, _ = evaluate_loss(model, DataLoader(va, batch_size=16), _loss_fn(1, None, "cpu"), Accel(torch.device("cpu")))
    assert loss == pytest.approx(hist["val_loss"].min(), rel=1e-5)


def test_reduce_lr_on_plateau():
    tr, va = _toy_data()
    cfg = train_spec(epochs=6, batch_size=16, lr=1e-9, seed=1, device="cpu",  # lr so small val_loss is flat
                      reduce_lr={"patience": 1, "factor": 0.1, "min_delta": 1e-3, "min_lr": 1e-11})
    _, hist = fit(_toy_model(), tr, va, cfg, progress=False)
    # history records the lr used in each epoch. Keras semantics: epoch 1 sets the best value,
    # each later epoch without improvement (patience 1) divides lr by 10, floored at min_lr
    assert hist["lr"].tolist() == pytest.approx([1e-9, 1e-9, 1e-10, 1e-11, 1e-11, 1e-11], rel=1e-6)


def test_class_weights_match_the_split_and_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    t = np.array([0] * 10 + [1] * 30)
    assert class_weights(t, 2) == pytest.approx([40 / (2 * 10), 40 / (2 * 30)])
    rng = np.random.default_rng(0)
    for n_classes, t in ((3, rng.integers(0, 3, 50)), (4, np.array([0, 0, 1, 3, 3, 3, 3])), (2, np.array([1, 1]))):
        present = np.unique(t)
        expected = dict(zip(present, compute_class_weight("balanced", classes=present, y=t)))
        # a class absent from the split keeps weight 1 (scikit-learn gives it none)
        assert class_weights(t, n_classes) == pytest.approx([expected.get(c, 1.0) for c in range(n_classes)])


def test_shuffled_label_control_stays_at_chance():
    from sklearn.metrics import roc_auc_score

    from medrepro.classify.training import predict_proba

    tr, va = _toy_data(n=256, seed=7)
    cfg = train_spec(epochs=6, batch_size=16, lr=1e-2, seed=2, device="cpu")
    real, _ = fit(_toy_model(), tr, va, cfg, progress=False)
    shuffled_y = tr.tensors[1][torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))]
    control, _ = fit(_toy_model(), TensorDataset(tr.tensors[0], shuffled_y), va, cfg, progress=False)
    y_val = va.tensors[1].numpy()
    auc_real = roc_auc_score(y_val, predict_proba(real, va)[:, 1])
    auc_control = roc_auc_score(y_val, predict_proba(control, va)[:, 1])
    assert auc_real > 0.95
    assert abs(auc_control - 0.5) < 0.2


def test_one_training_dataclass_without_defaults_of_its_own():
    """fit takes the run's ``train`` block as the one dataclass of the training settings
    (medrepro.specs.TrainSpec); it carries no defaults (the schema's are the only ones: the tests
    build theirs from them), and every schema key of the block is one of its fields."""
    import dataclasses

    from medrepro.specs import TrainSpec

    props = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())["$defs"]["train_spec"]["properties"]
    fields = dataclasses.fields(TrainSpec)
    assert {f.name for f in fields} == set(props)
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields)
    spec = train_spec(epochs=3)
    assert spec.epochs == 3 and spec.lr == props["lr"]["default"] and spec.early_stopping is None
    import medrepro.classify.training as training

    assert not hasattr(training, "TrainConfig")


