"""A real Snakemake run of the whole chain on a tiny config."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def tiny_config(results: Path) -> dict:
    return {
        "results": str(results),
        "figures": {"dpi": 60},
        "datasets": {
            "rsna": {"synthetic": {"n_train": 6, "n_test": 1, "image_size": 128}},
            "kermany": {"synthetic": {"counts": {"train": {"NORMAL": 14, "PNEUMONIA": 20},
                                                 "val": {"NORMAL": 2, "PNEUMONIA": 2},
                                                 "test": {"NORMAL": 6, "PNEUMONIA": 6}}, "size_scale": 0.05}},
            "covid": {"synthetic": {"counts": {"COVID": 2, "Lung_Opacity": 2, "Normal": 2, "Viral Pneumonia": 2},
                                    "image_size": 64, "mask_size": 48}},
            "brain_tumor": {"synthetic": {"patients": {"meningioma": 1, "glioma": 1, "pituitary": 1},
                                          "slices_per_patient": [1, 2], "image_size": 64}},
            "rfmid": {"synthetic": {"counts": {"train": 3, "val": 2, "test": 2}, "size_scale": 0.03}},
        },
        "experiments": {"cnn_kermany": {"model": {"input_size": [32, 32]}, "train": {"epochs": 2}},
                        "cnn_pediatric": {"subset": {"per_class": {"normal": 15, "pneumonia": 15}},
                                          "model": {"input_size": [48, 48]}, "train": {"epochs": 2}},
                        **{f"tk_{b}": {"model": {"input_size": [32, 32]}, "train": {"epochs": 2}}
                           for b in ("resnet50", "resnet50_l2", "vgg19", "efficientnet_b4", "efficientnet_b4_l2")},
                        "tk_inception_v3": {"model": {"input_size": [80, 80]}, "train": {"epochs": 2}}},
    }


def run(args, cwd=REPO):
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_tiny_config_end_to_end(tmp_path):
    results = tmp_path / "results"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(results)))
    proc = run(["--cores", "2", "--configfile", str(cfg), "--nolock", "-q"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    paper = results / "papers" / "cnn_kermany"
    for ext in ("csv", "md", "tex"):
        assert (paper / "tables" / f"classification_report.{ext}").is_file()
        assert (paper / "tables" / f"comparison.{ext}").is_file()
    for ext in ("png", "pdf"):
        assert (paper / "figures" / f"confusion_matrix.{ext}").is_file()
        assert (paper / "figures" / f"learning_curves.{ext}").is_file()
        for d in ("rsna", "kermany", "covid", "brain_tumor", "rfmid"):
            assert (results / "figures" / "contact_sheets" / f"{d}.{ext}").is_file()

    ped = results / "papers" / "cnn_pediatric"
    for stem in ("fig11_12_intensity_histogram", "fig13_14_class_counts", "fig15_16_normal_grid",
                 "fig17_pneumonia_grid", "fig21_accuracy", "fig22_loss"):
        assert (ped / "figures" / f"{stem}.png").is_file() and (ped / "figures" / f"{stem}.pdf").is_file()
    for stem in ("fig19_model_summary", "fig20_epoch_log", "fig13_14_class_counts", "comparison"):
        assert (ped / "tables" / f"{stem}.tex").is_file()
    counts = pd.read_csv(ped / "tables" / "fig13_14_class_counts.csv").set_index("split")
    assert counts.to_numpy().sum() == 30  # the subset: 15 + 15
    log = pd.read_csv(ped / "tables" / "fig20_epoch_log.csv")
    ped_cmp = pd.read_csv(ped / "tables" / "comparison.csv").set_index("metric")
    assert ped_cmp.loc["best validation accuracy", "reproduced"] == pytest.approx(log["val_accuracy"].max())
    # validated on the test split, as the paper did: the last epoch's val accuracy is the test accuracy
    ped_pred = pd.read_csv(results / "experiments" / "cnn_pediatric" / "predictions.csv")
    ped_test = ped_pred[ped_pred["split"] == "test"]
    assert log["val_accuracy"].iloc[-1] == pytest.approx((ped_test["target"] == ped_test["pred"]).mean())

    tk = results / "papers" / "transfer_kermany"
    table = pd.read_csv(tk / "tables" / "table_experiments.csv")
    assert len(table) == 6 and table[["val_accuracy", "test_accuracy", "test_loss"]].notna().all().all()
    assert (tk / "figures" / "roc_resnet50_l2.pdf").is_file()
    # four backbones' features, computed once each, shared by the six experiments
    assert len(list((results / "features" / "kermany").glob("*.pt"))) == 4

    # the table agrees with the predictions it was made from
    pred = pd.read_csv(results / "experiments" / "cnn_kermany" / "predictions.csv")
    test = pred[pred["split"] == "test"]
    table = pd.read_csv(paper / "tables" / "classification_report.csv")
    acc = table.loc[table["class"] == "accuracy", "f1-score"].item()
    assert acc == pytest.approx((test["target"] == test["pred"]).mean())
    assert len(test) == 12
    comp = pd.read_csv(paper / "tables" / "comparison.csv")
    assert comp["published"].notna().all() and comp["reproduced"].notna().all()
    assert "demo scale" in (paper / "tables" / "classification_report.md").read_text()
    assert "published vs reproduced" in (results / "report.md").read_text()

    # manifests for all five datasets, and the split audit found no leak after dropping
    for d in ("rsna", "kermany", "covid", "brain_tumor", "rfmid"):
        assert len(pd.read_csv(results / "manifests" / f"{d}.csv")) > 0
    audit = json.loads((results / "experiments" / "cnn_kermany" / "split_audit.json").read_text())
    assert audit["overlap_groups_after"] == 0
    assert (results / "logs" / "train" / "cnn_kermany.log").read_text().count("val_loss=") == 2
    assert (results / "benchmarks" / "train" / "cnn_kermany.tsv").is_file()

    # nothing left to do on a second run
    dry = run(["-n", "--configfile", str(cfg), "--nolock"])
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_bad_config_value_stops_with_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"results": str(tmp_path / "r"),
                                   "datasets": {"kermany": {"synthetic": {"difficulty": 2}}}}))
    proc = run(["-n", "--configfile", str(cfg), "--nolock"])
    assert proc.returncode != 0
    assert "datasets.kermany.synthetic.difficulty: 2 is above the maximum 1" in proc.stdout + proc.stderr
