"""Bad input gets a message naming the file, row or key and what was expected; the run goes on."""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medrepro import datasets
from medrepro.config import ConfigError, load_config, validate_config
from medrepro.datasets.base import DatasetLayoutError

from .conftest import REPO


def _copy(raw, name, tmp_path) -> Path:
    root, _ = raw
    dst = tmp_path / name
    shutil.copytree(root / name, dst)
    return dst


def test_rsna_bad_rows(raw, tmp_path):
    d = _copy(raw, "rsna", tmp_path)
    labels = d / "stage_2_train_labels.csv"
    lines = labels.read_text().splitlines()
    n_patients = len({line.split(",")[0] for line in lines[1:]})
    lines.append("ghost-patient,,,,,0")  # names a DICOM that does not exist
    lines.append("bad-target,,,,,2")
    pos = next(line for line in lines[1:] if line.endswith(",1"))
    lines.append(pos.split(",")[0].replace(pos.split(",")[0], "bad-box") + ",abc,1.0,2.0,3.0,1")
    labels.write_text("\n".join(lines) + "\n")
    info = d / "stage_2_detailed_class_info.csv"
    info.write_text(info.read_text() + "ghost-patient,Pneumonia?\n")
    (d / "stage_2_train_images" / "orphan.dcm").write_bytes(b"not a dicom")
    res = datasets.rsna.ingest(d)
    rej = res.rejections
    assert len(res.manifest) == n_patients  # the good rows are all kept
    msgs = rej["reason"].tolist()
    ghost = rej[rej["file"].str.endswith("ghost-patient.dcm")]
    assert "DICOM file is missing" in ghost.iloc[0]["reason"]
    assert any("Target is '2', expected 0 or 1" in m for m in msgs)
    bad_box = rej[rej["field"] == "x"]
    assert "x is 'abc', expected a number" in bad_box.iloc[0]["reason"]
    assert bad_box.iloc[0]["row"] == len(lines) - 1
    cls = rej[rej["field"] == "class"]
    assert "expected one of" in cls.iloc[0]["reason"] and cls.iloc[0]["file"].endswith("detailed_class_info.csv")
    orphan = rej[rej["file"].str.endswith("orphan.dcm")]
    assert "no row in stage_2_train_labels.csv" in orphan.iloc[0]["reason"]


def test_rsna_missing_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="stage_2_train_images"):
        datasets.rsna.ingest(tmp_path)


def test_kermany_unknown_class_and_junk(raw, tmp_path):
    d = _copy(raw, "kermany", tmp_path)
    (d / "chest_xray" / "train" / "COVID").mkdir()
    (d / "chest_xray" / "train" / "NORMAL" / "notes.txt").write_text("x")
    res = datasets.kermany.ingest(d)
    rej = res.rejections
    assert any(r.endswith("train/COVID") for r in rej["file"]) and "unknown class folder" in rej["reason"].iloc[0]
    assert any("not an image file" in r for r in rej["reason"])
    with pytest.raises(DatasetLayoutError, match="chest_xray"):
        datasets.kermany.ingest(tmp_path / "nothing-here")


def test_covid_row_without_image(raw, tmp_path):
    d = _copy(raw, "covid", tmp_path)
    top = d / "COVID-19_Radiography_Dataset"
    (top / "COVID" / "images" / "COVID-2.png").unlink()
    res = datasets.covid.ingest(d)
    rej = res.rejections
    assert len(rej) == 1
    r = rej.iloc[0]
    assert r["file"].endswith("COVID.metadata.xlsx") and r["row"] == 2 and r["field"] == "FILE NAME"
    assert "COVID/images/COVID-2.png" in r["reason"]


def test_brain_tumor_bad_members(raw, tmp_path):
    d = _copy(raw, "brain_tumor", tmp_path)
    with zipfile.ZipFile(d / "extra.zip", "w") as z:
        z.writestr("9001.mat", b"garbage")
        buf = io.BytesIO()
        import numpy as np

        datasets.brain_tumor.write_mat73(buf, 4, "X1", np.zeros((8, 8), np.int16), np.zeros((8, 8)), np.zeros((4, 2)))
        z.writestr("9002.mat", buf.getvalue())
    res = datasets.brain_tumor.ingest(d)
    rej = res.rejections.set_index("file")
    assert "cannot read MATLAB v7.3 file" in rej.loc[f"{d / 'extra.zip'}::9001.mat", "reason"]
    assert "cjdata/label is 4, expected 1, 2 or 3" in rej.loc[f"{d / 'extra.zip'}::9002.mat", "reason"]


def test_rfmid_bad_values(raw, tmp_path):
    d = _copy(raw, "rfmid", tmp_path)
    csv_path = d / "Training_Set" / "Training_Set" / "RFMiD_Training_Labels.csv"
    df = pd.read_csv(csv_path)
    df.loc[1, "DR"] = 2
    df.loc[2, "ID"] = 999  # names a missing image
    df.to_csv(csv_path, index=False)
    res = datasets.rfmid.ingest(d)
    rej = res.rejections
    dr = rej[rej["field"] == "DR"].iloc[0]
    assert dr["row"] == 2 and "DR is '2', expected 0 or 1" in dr["reason"]
    missing = rej[rej["file"].str.endswith("999.png")].iloc[0]
    assert "named by RFMiD_Training_Labels.csv row 3" in missing["reason"]
    assert any(r.endswith("/3.png") and "no row" in why for r, why in zip(rej["file"], rej["reason"]))


def _demo_config():
    """The demo config as the Snakefile composes it, before validation."""
    from medrepro.config import compose_config

    return compose_config(REPO / "config")


@pytest.mark.parametrize("mutate,expected", [
    (lambda c: c["datasets"]["kermany"]["synthetic"].update(difficulty=1.5),
     "datasets.kermany.synthetic.difficulty: 1.5 is above the maximum 1"),
    (lambda c: c["experiments"]["cnn_kermany"]["split"].update(overlap="maybe"),
     "experiments.cnn_kermany.split.overlap: 'maybe' is not one of ['error', 'drop', 'report']"),
    (lambda c: c["experiments"]["cnn_kermany"].update(dataset="kermani"),
     "experiments.cnn_kermany.dataset: 'kermani' is not a dataset of this config"),
    (lambda c: c["experiments"]["cnn_kermany"]["train"].update(epochs="ten"),
     "experiments.cnn_kermany.train.epochs: 'ten' is not of type integer"),
    (lambda c: c["datasets"]["rsna"].update(source="local"),
     "datasets.rsna.path: required when source is 'local'"),
    (lambda c: c["experiments"]["cnn_kermany"]["model"]["layers"][-1].update(units=3),
     "layers[-1].units: 3, but output 'sigmoid' with 2 classes needs 1"),
    (lambda c: c["experiments"]["cnn_pediatric"]["subset"]["per_class"].update(healthy=3),
     "experiments.cnn_pediatric.subset.per_class: 'healthy' is not a class of the experiment"),
    (lambda c: c["experiments"]["cnn_pediatric"]["train"].update(validate_on="val"),
     "experiments.cnn_pediatric.train.validate_on: 'val' is not a split this experiment makes"),
    (lambda c: c["papers"]["cnn_pediatric"]["outputs"].append({"kind": "pie_chart", "name": "x"}),
     "papers.cnn_pediatric.outputs[10].kind: 'pie_chart' is not one of"),
    (lambda c: c["datasets"]["kermany"].update(sourse="local"),
     "datasets.kermany: 'sourse' was unexpected"),
    (lambda c: c["papers"]["cnn_kermany"]["departures"][0].update(setting="experiments.cnn_kermany.train.validate"),
     "papers.cnn_kermany.departures[0].setting: 'experiments.cnn_kermany.train.validate' is not a key"),
    (lambda c: c["experiments"]["cnn_pediatric"]["split"]["counts"]["test"].update(healty=3),
     "experiments.cnn_pediatric.split.counts.test: 'healty' is not a class of the experiment"),
    (lambda c: c["studies"]["tm_TC"]["split"].update(fractions={"train": 0.72, "val": 0.14, "test": 0.14}),
     "studies.tm_TC.split.fractions: split fractions {'train': 0.72, 'val': 0.14, 'test': 0.14} are not whole"),
    (lambda c: c["studies"]["tm_TC"]["backbones"].update(efficientnet_b4=c["studies"]["tm_TC"]["backbones"]["vgg16"]),
     "studies.tm_TC.fine_tune.count_layers: 'keras', but there is no Keras layer list for the torchvision "
         "network of backbone 'efficientnet_b4'"),
    (lambda c: c["studies"]["tm_TC"]["train"].update(deterministic="yes"),
     "studies.tm_TC.train.deterministic: 'yes' is not one of ['auto', True, False]"),
    (lambda c: c["experiments"]["mr_exp2"]["model"]["detector"].update(last_stage=5),
     "experiments.mr_exp2.model.detector.anchor_sizes: 4 sizes, but a pyramid on C2-C5 (last_stage) has 5 levels"),
])
def test_config_errors_name_the_key(mutate, expected):
    cfg = _demo_config()
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, REPO / "config" / "schema.yaml")
    assert expected in str(e.value)


def test_shipped_configs_are_valid():
    schema = REPO / "config" / "schema.yaml"
    demo = load_config(REPO / "config", schema_path=schema)
    full = load_config(REPO / "config", [REPO / "config" / "full.yaml"], schema)
    assert demo["scale"] == "demo" and full["scale"] == "full"
    assert all(d["source"] == "download" for d in full["datasets"].values())
    assert full["experiments"]["cnn_kermany"]["model"]["input_size"] == [150, 150]
    full_model, demo_model = full["experiments"]["cnn_kermany"]["model"], demo["experiments"]["cnn_kermany"]["model"]
    assert full_model["layers"] == demo_model["layers"]
    # the demo's heads normalise their random-init features; the papers' heads (full.yaml) do not
    heads = {**{n: e["model"].get("head") or [] for n, e in full["experiments"].items()},
             **{f"{n}.{b}": v["head"] for n, st in full["studies"].items() for b, v in st["backbones"].items()}}
    assert not [n for n, h in heads.items() if any(layer["type"] == "normalization" for layer in h)]
    demo_head = demo["experiments"]["tk_resnet50"]["model"]["head"]
    assert demo_head[0] == {"type": "normalization", "epsilon": 0}
    assert full["experiments"]["tk_resnet50"]["model"]["head"] == demo_head[1:]
    # the demo's shorter stages 3-4 and narrower detector pyramid stay out of the papers' settings
    for name, st in full["studies"].items():
        assert st["augment_epochs"] is None and st["fine_tune"]["epochs"] == 5, name  # the thesis' 5 epochs
        assert demo["studies"][name]["augment_epochs"] < demo["studies"][name]["train"]["epochs"]
    assert {e["model"]["detector"]["fpn_channels"] for e in full["experiments"].values() if e["task"] == "detect"} \
        == {256}


def test_smoke_config_changes_only_counts_epochs_and_iterations():
    """config/smoke.yaml keeps full.yaml's models, sizes, heads, batch sizes, preprocessing and metrics."""
    schema = REPO / "config" / "schema.yaml"
    base = [REPO / "config" / "full.yaml"]
    full, smoke = (load_config(REPO / "config", base, schema),
                   load_config(REPO / "config", base + [REPO / "config" / "smoke.yaml"], schema))
    # one leakage-inflation pair of each kind (an experiment, a study) instead of full.yaml's nine
    assert smoke["inflation"]["experiments"] == ["cnn_kermany"] and list(smoke["inflation"]["studies"]) == ["tm_TC"]
    for name, e in full["experiments"].items():
        if e.get("inflation_of") and name not in smoke["experiments"]:
            continue
        s = smoke["experiments"][name]
        assert s["model"] == e["model"] and s["classes"] == e["classes"], name
        split_counts = ("counts",)  # images per class drawn into a split: a count
        assert {k: v for k, v in s["split"].items() if k not in split_counts} == \
            {k: v for k, v in e["split"].items() if k not in split_counts}, name
        assert s.get("augment") == e.get("augment") and s["threshold"] == e["threshold"], name
        assert s.get("detect") == e.get("detect"), name
        changed = {k for k in e["train"] if s["train"][k] != e["train"][k]}
        counts = {"epochs", "steps_per_epoch", "warmup_iterations"}
        if e["task"] == "detect":
            counts.add("batch_size")  # images per Mask R-CNN step
        assert changed <= counts, (name, changed)
        assert (s.get("subset") or {}).get("seed") == (e.get("subset") or {}).get("seed"), name
    for name, st in full["studies"].items():
        s = smoke["studies"][name]
        assert s["backbones"] == st["backbones"] and s["batch_sizes"] == st["batch_sizes"], name
        assert s["learning_rates"] == st["learning_rates"] and s["augment"] == st["augment"], name
        assert {k for k in st["train"] if s["train"][k] != st["train"][k]} <= {"epochs"}, name
        assert {k for k in st["fine_tune"] if s["fine_tune"][k] != st["fine_tune"][k]} <= {"epochs"}, name
    for name, d in full["datasets"].items():
        assert smoke["datasets"][name]["convert"] == d["convert"], name  # the papers' resolutions
    assert smoke["weights"] == full["weights"] and smoke["figures"] == full["figures"]


def test_departures_say_which_settings_follow_the_paper():
    """full.yaml selects on test as the thesis did; the demo selects on validation: the report's
    departures table says so, with the deciding key and its value."""
    from medrepro.config import compose_config
    from medrepro.departures import resolved_departures
    from medrepro.publish.compare import departures_table

    demo = _demo_config()
    full = compose_config(REPO / "config", [REPO / "config" / "full.yaml"])
    schema = REPO / "config" / "schema.yaml"
    by_topic = {c: {d["topic"]: d for d in resolved_departures(validate_config(cfg, schema), "transfer_multidataset")}
                for c, cfg in (("demo", demo), ("full", full))}
    assert by_topic["full"]["model selection"]["follows"] and by_topic["full"]["model selection"]["value"] == "test"
    assert not by_topic["demo"]["model selection"]["follows"]
    table = departures_table(list(by_topic["demo"].values()))
    row = table.set_index("topic").loc["model selection"]
    assert "[studies.tm_TC.select_on = 'val': departs]" in row["this run"]
    for paper in demo["papers"]:  # every paper states its departures
        assert len(demo["papers"][paper].get("departures", [])) >= 3, paper


def test_every_numbered_table_and_figure_is_produced_or_said_not_to_be():
    """Each figure and each results table transcribed from a paper is made by an output (its name
    starts with the key, or the output ``covers`` it) or listed under ``not_produced`` with a reason."""
    cfg = _demo_config()
    for paper, p in cfg["papers"].items():
        published = yaml.safe_load((REPO / p["published"]).read_text())
        keys = list(published.get("figures") or {}) + [k for k in published.get("reported") or {}
                                                        if k.startswith("table") or k.startswith("per_class")]
        names = [o["name"] for o in p.get("outputs", [])]
        covered = {c for o in p.get("outputs", []) for c in o.get("covers", [])}
        skipped = {x["name"] for x in p.get("not_produced", [])}
        for k in keys:
            stem = k.split("_to_")[0]  # fig5_1_to_5_3: fig5_1, fig5_2, fig5_3
            assert k in covered or k in skipped or any(n.startswith(stem) for n in names), (paper, k)


def test_a_comparison_or_headline_path_that_names_nothing_is_an_error_not_a_blank_cell():
    from medrepro.publish.compare import MissingPath, comparison_table, headline_table

    metrics = {"test": {"accuracy": 0.8, "auc": None, "majority_rate": 0.6}}
    published = {"reported": {"test_accuracy": 0.9, "auc": 0.95}}
    ok = comparison_table(metrics, published, [
        {"metric": "acc", "reproduced": "test.accuracy", "published": "reported.test_accuracy"},
        {"metric": "auc", "reproduced": "test.auc", "published": "reported.auc"}])  # present but empty: blank
    assert ok["reproduced"].tolist()[0] == 0.8 and pd.isna(ok["reproduced"].tolist()[1])
    with pytest.raises(MissingPath) as e:
        comparison_table(metrics, published, [{"metric": "test accuracy", "reproduced": "test.acuracy",
                                               "published": "reported.test_accuracy", "experiment": "cnn_kermany"}],
                         where="papers.cnn_kermany.compare")
    assert "papers.cnn_kermany.compare 'test accuracy': reproduced (metrics.json of cnn_kermany)" in str(e.value)
    assert "'test.acuracy' does not exist (no 'acuracy' after test; there: ['accuracy', 'auc', 'majority_rate'])" \
        in str(e.value)
    with pytest.raises(MissingPath, match="published \\(the paper's YAML\\): 'reported.test_acc' does not exist"):
        comparison_table(metrics, published, [{"metric": "m", "reproduced": "test.accuracy",
                                               "published": "reported.test_acc"}])
    with pytest.raises(MissingPath, match="headline 'acc' of e1: 'test.chance' does not exist"):
        headline_table({"e1": metrics}, [{"experiment": "e1", "metric": "acc", "reproduced": "test.accuracy",
                                          "chance": "test.chance"}])
    h = headline_table({"e1": metrics}, [{"experiment": "e1", "metric": "acc", "reproduced": "test.accuracy",
                                          "chance": "test.majority_rate"}])
    assert h.iloc[0]["margin"] == pytest.approx(0.2) and h.iloc[0]["above chance"] == "yes"
