"""transfer_multidataset's staged study: heads, parameter counts, sampling, the four stages."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from medrepro import datasets, prepare
from medrepro.classify import run
from medrepro.classify.features import extract_features
from medrepro.classify.models import build_model
from medrepro.classify.training import resample_indices
from medrepro.config import validate_config
from medrepro.convert import convert_manifest
from medrepro.plan import study_features, study_run_spec
from medrepro.specs import model_spec, study_spec
from medrepro.study import stages
from medrepro.study.summary import parameter_counts, summarize

from ..conftest import REPO, demo_config


def _demo_config() -> dict:
    return demo_config()


def _paper_head(units):
    return [{"type": "dense", "units": u, "activation": "relu"} for u in units[:-1]] + [
        {"type": "dense", "units": units[-1]}]


def test_every_backbones_parameters_are_the_thesis_counts():
    """The thesis (Keras, TC's 3 classes) prints total and trainable counts for all three models:
    the trainable heads match torch's count exactly, the totals once counted as Keras counts
    (BatchNorm moving statistics, ResNet-50's conv biases, Inception-V3 without BatchNorm scale)."""
    cfg = demo_config("full.yaml")
    published = yaml.safe_load((REPO / "config" / "papers" / "transfer_multidataset" / "published.yaml").read_text())
    reported = published["model"]["parameters_reported"]
    got = parameter_counts(study_spec(cfg["studies"]["tm_TC"]))
    for b, name in (("vgg16", "VGG-16"), ("resnet50", "ResNet-50"), ("inception_v3", "Inception-V3")):
        assert got[b]["trainable"] == reported[name]["trainable"], b
        assert got[b]["keras_total"] == reported[name]["total"], b
    assert got["resnet50"]["total"] == 102_764_547 + 23_508_032  # torch's own count: no biases, no BN buffers


def test_fine_tuning_unfreezes_the_second_half_of_the_layers(tmp_path):
    spec = {"arch": "transfer", "backbone": "resnet50", "input_size": [64, 64], "channels": 3, "pool": "flatten",
            "freeze": True, "normalize": "weights", "init": "glorot_uniform", "head": _paper_head([32, 3]),
            "output": "softmax"}
    model = build_model(model_spec(spec), n_outputs=3)
    head = sum(p.numel() for p in model.head.parameters())
    layers = model.backbone.layers()
    second_half = layers[len(layers) - round(len(layers) / 2):]
    expected = sum(p.numel() for m in second_half for p in m.parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == head
    n = model.backbone.unfreeze_last(0.5, "torch")  # torch's leaf modules (Keras' count: test_keras_semantics)
    assert n == expected and 0 < n < sum(p.numel() for p in model.backbone.parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == head + expected
    # the unfrozen layers are the last ones: layer4 trains, the stem does not
    assert all(p.requires_grad for p in model.backbone.body.layer4.parameters())
    assert not any(p.requires_grad for p in model.backbone.body.conv1.parameters())
    model.train()
    assert not model.backbone.training  # BatchNorm stays in inference mode, as Keras fine-tuning does


def test_resampling_balances_classes_deterministically():
    t = np.array([0] * 10 + [1] * 3 + [2] * 5)
    over = resample_indices(t, "oversample", 7)
    under = resample_indices(t, "undersample", 7)
    assert np.bincount(t[over]).tolist() == [10, 10, 10]
    assert np.bincount(t[under]).tolist() == [3, 3, 3] and len(set(under)) == 9
    assert set(np.flatnonzero(t != 0)) <= set(over)  # oversampling keeps every original image
    assert over == resample_indices(t, "oversample", 7) and over != resample_indices(t, "oversample", 8)


@pytest.fixture(scope="module")
def tc(tmp_path_factory):
    """A small brain-tumour split and a study using ResNet-50 and Inception-V3 on it."""
    root = tmp_path_factory.mktemp("tc")
    datasets.brain_tumor.synthesize(root / "raw", 4, {"meningioma": 4, "glioma": 4, "pituitary": 4},
                                    slices_per_patient=[3, 3], image_size=64, difficulty=0.1)
    res = datasets.brain_tumor.ingest(root / "raw")
    conv, _ = convert_manifest(res.manifest, root / "png", 1, 64)
    pd.DataFrame(conv).to_csv(root / "conv.csv", index=False)
    st = copy.deepcopy(_demo_config()["studies"]["tm_TC"])
    st["backbones"] = {"resnet50": {"input_size": [32, 32], "head": _paper_head([16, 3])},
                       "inception_v3": {"input_size": [75, 75], "head": _paper_head([16, 3])}}
    st["batch_sizes"], st["learning_rates"] = [4, 16], [0.01, 0.001]
    st["train"].update(epochs=3)
    st["fine_tune"]["epochs"] = 1
    st["split"].update(fractions={"train": 0.5, "val": 0.25, "test": 0.25})
    prepare.split(root / "conv.csv", st, root / "split.csv", root / "audit.json")
    feats = {}
    for b, (key, model) in study_features(st).items():
        feats[b] = root / f"{key}.pt"
        extract_features(root / "conv.csv", model, None, 0, feats[b], st["train"])
    return root, st, feats


@pytest.fixture(scope="module")
def staged(tc):
    """The four stages on ``tc`` (stage 3 on the cached features) and the study's metrics.json."""
    root, st, feats = tc
    stages.stage1(root / "split.csv", {b: str(p) for b, p in feats.items()}, st, root / "s1")
    sel1 = json.loads((root / "s1" / "selection.json").read_text())
    stages.stage2(root / "split.csv", feats[sel1["backbone"]], root / "s1" / "selection.json", st, root / "s2")
    sel2 = json.loads((root / "s2" / "selection.json").read_text())
    stages.stage3(root / "split.csv", root / "s2" / "selection.json", st, root / "s3",
                  features=feats[sel2["backbone"]])
    stages.stage4(root / "split.csv", root / "s2" / "model.pt", st, root / "s4",
                  stage3=(root / "s2" / "runs.csv", root / "s3" / "model.pt", root / "s3" / "runs.csv"))
    m = summarize("tm_TC", st, root / "split.csv", {1: root / "s1", 2: root / "s2", 3: root / "s3",
                                                          4: root / "s4"}, root / "metrics.json")
    return root, st, feats, m


def test_fine_tuning_starts_from_the_better_of_stages_2_and_3(staged, tmp_path):
    """The thesis fine-tuned stage 2's models "because augmentation did not help": with
    ``fine_tune.start: best_of_2_3`` stage 4 starts from whichever of stage 2's choice and stage 3
    scores higher on ``select_on``; ``stage2`` always from stage 2's."""
    root, st, feats, m = staged
    from medrepro.specs import study_spec

    spec = study_spec(st)
    assert spec.fine_tune.start == "best_of_2_3"
    s2, s3 = pd.read_csv(root / "s2" / "runs.csv"), pd.read_csv(root / "s3" / "runs.csv")
    b2, r3 = stages.select(s2, spec), s3.iloc[0]
    want = 3 if (r3["val_accuracy"], -r3["val_loss"]) > (b2["val_accuracy"], -b2["val_loss"]) else 2
    params = json.loads((root / "s4" / "parameters.json").read_text())
    assert params["started_from_stage"] == want
    assert pd.read_csv(root / "s4" / "runs.csv")["started_from_stage"].iloc[0] == want
    assert m["stage4"]["started_from_stage"] == want  # the summary says what stage 4 fine-tuned
    # a stage 3 that beats stage 2 is the start; one that only ties is not
    better = s3.assign(val_accuracy=1.0, val_loss=0.0)
    better.to_csv(tmp_path / "s3.csv", index=False)
    files = (root / "s2" / "runs.csv", root / "s3" / "model.pt", tmp_path / "s3.csv")
    assert stages.fine_tune_start(spec, root / "s2" / "model.pt", files) == (root / "s3" / "model.pt", 3)
    best2 = stages.select(s2, spec)
    s3.assign(val_accuracy=best2["val_accuracy"], val_loss=best2["val_loss"]).to_csv(tmp_path / "tie.csv", index=False)
    files = (root / "s2" / "runs.csv", root / "s3" / "model.pt", tmp_path / "tie.csv")
    assert stages.fine_tune_start(spec, root / "s2" / "model.pt", files) == (root / "s2" / "model.pt", 2)
    from medrepro.specs import replace

    only2 = replace(spec, **{"fine_tune.start": "stage2"})
    assert stages.fine_tune_start(only2, root / "s2" / "model.pt", files) == (root / "s2" / "model.pt", 2)
    with pytest.raises(ValueError, match="best_of_2_3 needs"):
        stages.fine_tune_start(spec, root / "s2" / "model.pt", None)


def test_four_stages_select_and_summarize(staged):
    root, st, feats, m = staged
    runs1 = pd.read_csv(root / "s1" / "runs.csv")
    assert len(runs1) == 4 and set(runs1["backbone"]) == {"resnet50", "inception_v3"}
    sel1 = json.loads((root / "s1" / "selection.json").read_text())
    best = runs1.sort_values(["val_accuracy", "val_loss"], ascending=[False, True]).iloc[0]
    assert (sel1["backbone"], sel1["batch_size"]) == (best["backbone"], int(best["batch_size"]))
    on_test = runs1.sort_values(["test_accuracy", "test_loss"], ascending=[False, True]).iloc[0]
    alt = sel1["if_selected_on_test"]  # what the thesis' selection on test would have picked
    assert (alt["backbone"], alt["batch_size"]) == (on_test["backbone"], int(on_test["batch_size"]))
    for r in runs1.itertuples():
        assert r.test_correct + r.test_incorrect == r.test_total and r.test_accuracy == r.test_correct / r.test_total

    runs2 = pd.read_csv(root / "s2" / "runs.csv")
    assert runs2["lr"].tolist() == [0.01, 0.001] and (runs2["backbone"] == sel1["backbone"]).all()
    assert (runs2["batch_size"] == sel1["batch_size"]).all()
    sel2 = json.loads((root / "s2" / "selection.json").read_text())

    r3 = pd.read_csv(root / "s3" / "runs.csv").iloc[0]
    assert bool(r3["augmentation"]) and r3["lr"] == sel2["lr"] and r3["backbone"] == sel2["backbone"]
    # validation and predictions from the cached features equal those from the images (the frozen
    # backbone sees the same unaugmented pixels), to float rounding
    stages.stage3(root / "split.csv", root / "s2" / "selection.json", st, root / "s3_images")
    for f, cols in (("predictions.csv", None), ("history.csv", ["loss", "val_loss", "val_accuracy"])):
        a, b = pd.read_csv(root / "s3" / f), pd.read_csv(root / "s3_images" / f)
        cols = cols or [c for c in a.columns if c.startswith("prob_")]
        assert cols and len(a) == len(b) and np.allclose(a[cols], b[cols], atol=1e-4)
    other = next(b for b in feats if b != sel2["backbone"])
    with pytest.raises(ValueError, match="stage 3 needs"):
        stages.stage3(root / "split.csv", root / "s2" / "selection.json", st, root / "s3x", features=feats[other])

    params = json.loads((root / "s4" / "parameters.json").read_text())
    assert params["trainable_fine_tuning"] == params["trainable_frozen"] + params["backbone_unfrozen"]
    h4 = pd.read_csv(root / "s4" / "history.csv")
    assert len(h4) == 1 and h4["lr"].iloc[0] == pytest.approx(1e-5)

    assert m["stage1"]["selected"]["backbone"] == sel1["backbone"]
    # the stage-2 head re-applied to the cached features reproduces its saved test predictions
    pred2 = pd.read_csv(root / "s2" / "predictions.csv")
    test = pred2[pred2["split"] == "test"]
    assert m["stage2"]["test"]["accuracy"] == pytest.approx((test["target"] == test["pred"]).mean())
    assert m["best"]["stage"] in (2, 3, 4)
    # the chance level the report's learning check sets beside it: the test set's most frequent class
    assert m["best"]["majority_rate"] == pytest.approx(test["target"].value_counts().max() / len(test))
    alt = m["best"]["if_selected_on_test"]
    k = max((2, 3, 4), key=lambda k: (m[f"stage{k}"]["test"]["accuracy"], -k))
    assert alt["stage"] == k and alt["accuracy"] == m[f"stage{k}"]["test"]["accuracy"]
    assert alt["stage2"]["lr"] in (0.01, 0.001)


def test_fine_tuning_starts_from_the_stage2_model(staged):
    """Before any fine-tuning step, the rebuilt model (backbone + stage-2 head) gives the stage-2
    predictions that were computed on cached features."""
    root, st, _, _ = staged
    model, spec, _ = stages.fine_tune_model(root / "s2" / "model.pt", study_spec(st))
    table = pd.read_csv(root / "split.csv", dtype={"image_id": str})
    test = table[table["split"] == "test"]
    from medrepro.classify.training import predict_proba

    proba = predict_proba(model, run.image_dataset(spec, test))
    pred2 = pd.read_csv(root / "s2" / "predictions.csv", dtype={"image_id": str})
    p2 = pred2[pred2["split"] == "test"].set_index("image_id").loc[test["image_id"]]
    names = [c["name"] for c in st["classes"]]
    np.testing.assert_allclose(proba, p2[[f"prob_{c}" for c in names]].to_numpy(), atol=1e-4)


def test_study_config_errors_name_the_key():
    cfg = _demo_config()
    bad = copy.deepcopy(cfg)
    bad["studies"]["tm_ER"]["backbones"]["vgg16"]["head"][-1]["units"] = 3
    bad["studies"]["tm_C19"]["dataset"] = "covid19"
    with pytest.raises(Exception) as e:
        validate_config(bad, REPO / "config" / "schema.yaml")
    msg = str(e.value)
    assert "studies.tm_ER.backbones.vgg16.head[-1].units: 3, but output 'sigmoid' with 2 classes needs 1" in msg
    assert "studies.tm_C19.dataset: 'covid19' is not a dataset" in msg
    spec = study_run_spec(cfg["studies"]["tm_TC"], "inception_v3", batch_size=8, lr=0.01, augment=True)
    assert spec["train"]["batch_size"] == 8 and spec["augment"] and spec["model"]["input_size"] == [96, 96]


def test_learning_rate_run_names_are_distinct():
    lrs = [1e-1, 1e-2, 1e-3, 1e-4, 1.2e-4, 1.5e-4, 1e-5]
    assert len({stages.lr_key(x) for x in lrs}) == len(lrs)
    assert stages.lr_key(1e-4) == "lr_0.0001" and stages.lr_key(1e-5) == "lr_1e-05"


def test_every_study_output_kind_shows_the_studys_files(staged, tmp_path):
    """Each output kind of :mod:`medrepro.publish.study` on the staged study above: tables hold the
    runs' and metrics' numbers, figures draw them."""
    from matplotlib.patches import Rectangle
    from PIL import Image

    from medrepro.publish import study as study_outputs
    from medrepro.publish.outputs import OUTPUTS, Context
    from medrepro.specs import output_spec

    root, st, _, m = staged
    files = {"metrics": root / "metrics.json", "split": root / "split.csv",
             **{f"stage{k}_runs": root / f"s{k}" / "runs.csv" for k in (1, 2, 3, 4)},
             **{f"stage{k}_predictions": root / f"s{k}" / "predictions.csv" for k in (2, 3, 4)},
             "stage2_history": root / "s2" / "history.csv", "stage4_parameters": root / "s4" / "parameters.json"}
    figures = {}

    class Drawn(Context):
        def figure(self, fig, name):
            figures[name] = fig
            return super().figure(fig, name)

    ctx = Drawn("transfer_multidataset", files, {}, {"dpi": 30, "formats": ["png"]}, "", tmp_path,
                all_files={"tc": files}, experiment="tc")
    done = set()

    def out(kind, **options):
        done.add(kind)
        paths = OUTPUTS[kind](ctx, output_spec({"kind": kind, "name": kind, "experiments": ["tc"], **options}))
        assert paths and all(p.is_file() for p in paths)
        csv = tmp_path / "tables" / f"{kind}.csv"
        return pd.read_csv(csv) if csv.is_file() else figures[kind]

    split = pd.read_csv(root / "split.csv")
    names = [c["name"] for c in st["classes"]]
    t = out("study_split_counts").set_index("split")
    want = pd.crosstab(split["split"], split["class"])
    assert all(t.loc[s, c] == want.loc[s, c] for s in ("train", "val", "test") for c in names)
    assert (t["total"] == t[names].sum(1)).all()

    runs1 = pd.read_csv(files["stage1_runs"])
    t = out("study_runs", stage=1)
    assert len(t) == len(runs1) and t["accuracy"].tolist() == pytest.approx(runs1["test_accuracy"].tolist())
    assert set(t["backbone"]) == {"ResNet-50", "Inception-V3"}
    t = out("study_runs", stage=1, best_per="backbone")
    assert sorted(zip(t["backbone"], t["batch_size"])) == sorted(
        (study_outputs.NAMES[b], v["batch_size"]) for b, v in m["stage1"]["best_per_backbone"].items())

    t = out("stage_comparison", stage=3)
    for row, k in zip(t.itertuples(), (2, 3)):
        assert row.accuracy == pytest.approx(m[f"stage{k}"]["test"]["accuracy"]) and row.f1 == pytest.approx(
            m[f"stage{k}"]["test"]["f1"])

    t = out("stage_per_class", stage=4).set_index("class")
    cm4 = np.array(m["stage4"]["test"]["confusion_matrix"])
    for i, c in enumerate(names):
        assert t.loc[c, "recall_b"] == pytest.approx(m["stage4"]["test"]["per_class"][c]["recall"])
        assert (t.loc[c, "correct_b"], t.loc[c, "total"]) == (cm4[i, i], cm4[i].sum())
    assert t.loc["P/T (average / total)", "correct_a"] == m["stage2"]["test"]["correct"]

    t = out("study_best")
    assert t["accuracy"].iloc[0] == pytest.approx(m["best"]["accuracy"])
    augmented = m["best"]["stage"] == 3 or (m["best"]["stage"] == 4 and m["stage4"]["started_from_stage"] == 3)
    assert t["augmentation"].iloc[0] == ("yes" if augmented else "no")

    t = out("fine_tune_parameters").set_index("model")
    params = json.loads(files["stage4_parameters"].read_text())
    sel = study_outputs.NAMES[m["stage2"]["selected"]["backbone"]]
    assert t.loc[sel, "trainable_fine_tuning"] == params["trainable_fine_tuning"]
    assert {k: t.loc[study_outputs.NAMES[k], "total"] for k in m["parameters"]} == {
        k: v["total"] for k, v in m["parameters"].items()}

    fig = out("batch_size_bars", experiment="tc")
    bars = sorted(p.get_height() for p in fig.axes[3].patches if isinstance(p, Rectangle))
    assert bars == pytest.approx(sorted(runs1["test_accuracy"]))  # one run per backbone and batch size

    runs2 = pd.read_csv(files["stage2_runs"]).sort_values("lr")
    fig = out("lr_curve")
    acc = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "accuracy")
    assert acc.get_xdata().tolist() == runs2["lr"].tolist()
    assert acc.get_ydata().tolist() == pytest.approx(runs2["test_accuracy"].tolist())

    fig = out("stage_confusion", stage=4)
    for ax, k in zip(fig.axes, (2, 4)):
        assert np.array_equal(np.asarray(ax.images[0].get_array()), m[f"stage{k}"]["test"]["confusion_matrix"])

    fig = out("study_learning_curves", metrics=["loss"])
    hist = pd.read_csv(files["stage2_history"])
    h = hist[hist["run"] == stages.lr_key(m["stage2"]["selected"]["lr"])]
    lines = {ln.get_label(): ln.get_ydata() for ln in fig.axes[0].get_lines()}
    assert lines["train loss"].tolist() == pytest.approx(h["loss"].tolist())
    assert lines["validation loss"].tolist() == pytest.approx(h["val_loss"].tolist())

    fig = out("prediction_examples", experiment="tc", n=4)
    pred = pd.read_csv(files[f"stage{m['best']['stage']}_predictions"], dtype={"image_id": str})
    pred = pred[pred["split"] == "test"]
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert len(titles) == min(4, len(pred))
    shown = {(t.split("\n")[0][5:], t.split("\n")[1][5:].split(" (")[0]) for t in titles}
    assert shown <= {(names[a], names[b]) for a, b in zip(pred["target"], pred["pred"])}

    fig = out("augmentation_examples", n=3)
    first = split[split["split"] == "train"]["png"].iloc[0]
    assert np.array_equal(np.asarray(fig.axes[0].images[0].get_array()),
                          np.asarray(Image.open(first).convert("RGB")))
    assert sum(1 for ax in fig.axes if ax.images) == 4

    assert done == {k for k, f in OUTPUTS.items() if f.__module__ == study_outputs.__name__}
