"""A real Snakemake run of the whole chain on a tiny config."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import REPO, browser_check, paper_folders, pdf_page_sizes, pdf_rows_missing

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# the papers, one folder each: a paper added as a folder is run and checked with the others
PAPERS, CHECKLISTED = paper_folders(), paper_folders("checklist.yaml")


def tiny_config(results: Path) -> dict:
    """The tiny run's config: the datasets' stand-ins at their smallest; each paper's runs at the
    sizes of its folder's tiny.yaml (``run_sizes: tiny``)."""
    return {
        "results": str(results),
        "run_sizes": "tiny",
        "figures": {"dpi": 60},
        "bootstrap": {"n_resamples": 50},
        "datasets": {
            "rsna": {"synthetic": {"n_train": 24, "n_test": 1, "image_size": 128, "positive_fraction": 0.5}},
            "kermany": {"synthetic": {"counts": {"train": {"NORMAL": 14, "PNEUMONIA": 20},
                                                 "val": {"NORMAL": 2, "PNEUMONIA": 2},
                                                 "test": {"NORMAL": 6, "PNEUMONIA": 6}}, "size_scale": 0.05}},
            "covid": {"synthetic": {"counts": {"COVID": 4, "Lung_Opacity": 1, "Normal": 4, "Viral Pneumonia": 4},
                                    "image_size": 64, "mask_size": 48}},
            "brain_tumor": {"synthetic": {"patients": {"meningioma": 3, "glioma": 3, "pituitary": 3},
                                          "slices_per_patient": [2, 2], "image_size": 64}},
            "rfmid": {"synthetic": {"counts": {"train": 6, "val": 3, "test": 3}, "size_scale": 0.03}},
        },
    }


def run(args, cwd=REPO):
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real Snakemake run of every paper on the tiny config, shared by the tests below.  With
    ``--keep-going`` a failing job stops only the jobs that need its outputs, so each paper's test
    reports on its own outputs (one paper's failure does not hide the others').  Yields (results
    directory, config file, a scratch directory); the run itself is checked by the first test."""
    tmp_path = tmp_path_factory.mktemp("workflow")
    results = tmp_path / "results"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(results)))
    proc = run(["--cores", "2", "--configfile", str(cfg), "--nolock", "-q", "--keep-going"])
    (tmp_path / "run.txt").write_text(f"{proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    yield results, cfg, tmp_path


@pytest.mark.slow
def test_the_tiny_run_succeeds(tiny_run):
    rc, _, tail = (tiny_run[2] / "run.txt").read_text().partition("\n")
    assert rc == "0", tail


@pytest.mark.slow
def test_cnn_kermany_and_the_report(tiny_run):
    """cnn_kermany's outputs, the report's provenance, intervals and learning check."""
    results, cfg, tmp_path = tiny_run
    paper = results / "papers" / "cnn_kermany"
    for ext in ("csv", "md", "tex"):
        assert (paper / "tables" / f"classification_report.{ext}").is_file()
        assert (paper / "tables" / f"comparison.{ext}").is_file()
    for ext in ("png", "pdf"):
        assert (paper / "figures" / f"confusion_matrix.{ext}").is_file()
        assert (paper / "figures" / f"learning_curves.{ext}").is_file()
        for d in ("rsna", "kermany", "covid", "brain_tumor", "rfmid"):
            assert (results / "figures" / "contact_sheets" / f"{d}.{ext}").is_file()

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
    report = (results / "report.md").read_text()
    assert "published vs reproduced" in report
    # provenance: the commit that ran, the experiment's config digest, the training step's device
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    m = json.loads((results / "experiments" / "cnn_kermany" / "metrics.json").read_text())
    assert m["provenance"]["commit"] == head and m["provenance"]["trained_on"]["device"] == "cpu"
    import torch

    capability = m["provenance"]["trained_on"]["cpu_capability"]  # the CPU kernels' instruction set
    assert capability == torch.backends.cpu.get_cpu_capability()
    assert f"| cpu {capability} " in (results / "report.md").read_text()
    assert json.loads((paper / "provenance.json").read_text())["experiments"]["cnn_kermany"] == m["provenance"]
    assert f"medrepro commit {head[:12]}" in (paper / "tables" / "classification_report.md").read_text()
    assert "## Provenance" in report and head[:12] in report
    for f in (results / "experiments" / "mr_exp2" / "metrics.json", results / "studies" / "tm_TC" / "metrics.json"):
        assert json.loads(f.read_text())["provenance"]["commit"] == head
    assert report.count("### Departures from the paper") == len(PAPERS)
    assert "ellipses inscribed in the RSNA boxes" in report
    # uncertainty: a bootstrap interval around every test metric (by patient), DeLong's for the AUC,
    # and the comparison rows carry both the interval and a verdict in words
    lo, hi = m["ci"]["intervals"]["test.accuracy"]
    assert lo <= m["test"]["accuracy"] <= hi and m["ci"]["unit"] == "patient_id"
    assert m["ci_delong"]["test.auc"]["low"] <= m["test"]["auc"] <= m["ci_delong"]["test.auc"]["high"]
    # each row judged as two estimates: the difference's interval holds both errors (wider than the
    # reproduced interval alone), the published one binomial on the paper's 624 test images
    judged = comp[comp["verdict"].isin(["consistent", "different", "inconclusive"])]
    assert len(judged) and set(comp["verdict"]) <= {"consistent", "different", "inconclusive",
                                                     "no interval (a training-curve or selection value)"}
    assert ((judged["diff_high"] - judged["diff_low"]) > (judged["ci_high"] - judged["ci_low"]) - 1e-12).all()
    assert set(judged["published error"]) <= {"binomial", "scaled"}
    from scipy import stats

    acc = comp.set_index("metric").loc["test accuracy"]  # recomputed: Wilson on 624 images, errors combined
    z = stats.norm.ppf(0.975)
    w = stats.binomtest(round(acc["published"] * 624), 624).proportion_ci(method="wilson")
    se = np.hypot((acc["ci_high"] - acc["ci_low"]) / (2 * z), (w.high - w.low) / (2 * z))
    d = acc["reproduced"] - acc["published"]
    assert (acc["diff_low"], acc["diff_high"]) == pytest.approx((d - z * se, d + z * se))
    assert acc["verdict"] == ("different" if d - z * se > 0 or d + z * se < 0 else "consistent"
                              if abs(d) + stats.norm.ppf(0.95) * se < 0.05 else "inconclusive")
    assert "### How a comparison is judged" in report and report.count("**Verdicts of ") == len(PAPERS)
    assert (paper / "figures" / "forest.pdf").is_file() and "`figures/forest.png`" in report  # its forest plot
    assert len(list((results / "papers" / "transfer_multidataset" / "figures").glob("forest_*.png"))) > 1
    summary = report.split("## Summary", 1)[1].split("\n## ", 1)[0]  # a row per paper, on the index page too
    assert all(f"| {p} " in summary for p in PAPERS)
    assert "<h2>Summary</h2>" in (results / "html" / "index.html").read_text()
    assert comp[["ci_low", "ci_high"]].notna().any(axis=1).any()
    for f, path in ((results / "experiments" / "mr_exp2" / "metrics.json", "opacity.recall"),
                    (results / "studies" / "tm_TC" / "metrics.json", "best.accuracy")):
        assert path in json.loads(f.read_text())["ci"]["intervals"], (f, path)
    # the learning check: each paper's headline metrics beside the majority rate of the same test set
    assert report.count("### Learning check: headline metrics against chance") == len(PAPERS)
    head_ck = pd.read_csv(paper / "tables" / "headline.csv").iloc[0]
    assert head_ck["reproduced"] == pytest.approx((test["target"] == test["pred"]).mean())
    assert head_ck["chance"] == pytest.approx(test["target"].value_counts().max() / len(test))
    assert head_ck["above chance"] == ("yes" if head_ck["reproduced"] > head_ck["chance"] else "no")
    tk_head = pd.read_csv(results / "papers" / "transfer_kermany" / "tables" / "headline.csv")
    assert len(tk_head) == 6 and (tk_head["margin"] == tk_head["reproduced"] - tk_head["chance"]).all()
    # calibration, which no paper reported: Brier and ECE of the test probabilities, recomputed here
    # by scikit-learn (Brier) and from the calibration curve weighted by its bins' counts (ECE)
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    cal = pd.read_csv(paper / "tables" / "calibration.csv").set_index("experiment").loc["cnn_kermany"]
    p1 = test["prob_pneumonia"] if "prob_pneumonia" in test else test.filter(like="prob_").iloc[:, 1]
    assert cal["brier"] == pytest.approx(brier_score_loss(test["target"], p1), abs=1e-6)  # float32 rows
    conf = test.filter(like="prob_").to_numpy()[np.arange(len(test)), test["pred"].to_numpy()]
    correct = (test["target"] == test["pred"]).astype(int).to_numpy()
    frac, mean = calibration_curve(correct, conf, n_bins=15)
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 16)[1:-1], conf), minlength=15)
    assert cal["ece"] == pytest.approx((counts[counts > 0] / len(test) * np.abs(frac - mean)).sum(), abs=1e-6)
    assert cal["ece_low"] <= cal["ece"] <= cal["ece_high"] and cal["brier_low"] <= cal["brier"] <= cal["brier_high"]
    assert report.count("### Calibration (not reported by the paper)") == 4  # every paper with a classifier or study
    for ext in ("png", "pdf"):
        assert (paper / "figures" / f"reliability_cnn_kermany.{ext}").is_file()
    assert len(pd.read_csv(results / "papers" / "transfer_kermany" / "tables" / "calibration.csv")) == 6


@pytest.mark.slow
def test_manifests_and_split_audits(tiny_run):
    """Every dataset's manifest; the split audits of the Kermany experiments."""
    results, cfg, tmp_path = tiny_run
    # manifests for all five datasets; the split audit found no leak after dropping (transfer_kermany);
    # cnn_kermany keeps the official folders as the paper did and reports their shared patients
    for d in ("rsna", "kermany", "covid", "brain_tumor", "rfmid"):
        assert len(pd.read_csv(results / "manifests" / f"{d}.csv")) > 0
    audit = json.loads((results / "experiments" / "tk_resnet50" / "split_audit.json").read_text())
    assert audit["overlap_groups_after"] == 0
    audit = json.loads((results / "experiments" / "cnn_kermany" / "split_audit.json").read_text())
    assert audit["merged_source_splits"] == {"val->train": 4} and audit["overlap_groups_after"] == audit[
        "overlap_groups_found"]
    assert (results / "logs" / "train" / "cnn_kermany.log").read_text().count("val_loss=") == 2
    assert (results / "benchmarks" / "train" / "cnn_kermany.tsv").is_file()


@pytest.mark.slow
def test_cnn_pediatric(tiny_run):
    """cnn_pediatric's figures and tables, its subset and the paper's test composition."""
    results, cfg, tmp_path = tiny_run
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
    assert ped_test["target"].value_counts().sort_index().tolist() == [3, 4]  # split.counts: the test composition


@pytest.mark.slow
def test_transfer_kermany(tiny_run):
    """transfer_kermany's table and figures; four backbones' features shared by six runs."""
    results, cfg, tmp_path = tiny_run
    tk = results / "papers" / "transfer_kermany"
    table = pd.read_csv(tk / "tables" / "table_experiments.csv")
    assert len(table) == 6 and table[["val_accuracy", "test_accuracy", "test_loss"]].notna().all().all()
    assert (tk / "figures" / "roc_resnet50_l2.pdf").is_file()
    # four backbones' features, computed once each, shared by the six experiments
    assert len(list((results / "features" / "kermany").glob("*.pt"))) == 4


@pytest.mark.slow
def test_maskrcnn_opacity(tiny_run):
    """maskrcnn_opacity: COCO files, tables 1-3 against the per-image rows, the figures."""
    results, cfg, tmp_path = tiny_run
    # maskrcnn_opacity: COCO annotations pycocotools loads, COCO results with RLE masks,
    # tables 1-3 agree with the per-image rows they were made from
    from pycocotools.coco import COCO

    mr = results / "experiments" / "mr_exp2"
    gt = COCO(str(mr / "annotations" / "test.json"))
    assert len(gt.getImgIds()) == 4
    res = json.loads((mr / "predictions.json").read_text())
    assert all(isinstance(r["segmentation"]["counts"], str) and len(r["bbox"]) == 4 for r in res)
    per = pd.read_csv(mr / "per_image.csv")
    assert len(per) == 4 and set(per["class"]) <= {"healthy", "pneumonia"}
    mrp = results / "papers" / "maskrcnn_opacity"
    t3 = pd.read_csv(mrp / "tables" / "table3_pneumonia_classification.csv").set_index("experiment")
    assert t3.loc["Experiment 2", "accuracy"] == pytest.approx(per["image_class"].isin(["TP", "TN"]).mean())
    t2 = pd.read_csv(mrp / "tables" / "table2_opacity_detection.csv").set_index("experiment")
    assert t2.loc["Experiment 2", "tp"] + t2.loc["Experiment 2", "fn"] == per["n_true"].sum()
    assert t2.loc["Experiment 2", "fp"] == per["fp"].sum()
    assert "ellipses inscribed in the RSNA boxes: the paper drew them by hand" in \
        (mrp / "tables" / "table2_opacity_detection.md").read_text()
    t1 = pd.read_csv(mrp / "tables" / "table1_training_parameters.csv").set_index("experiment")
    assert t1.loc["Experiment 1", "classes"] == "pneumonia" and t1.loc["Experiment 3", "augmentation"] == "yes"
    assert t1.loc["Experiment 1", "train_images"] < t1.loc["Experiment 2", "train_images"]
    for stem in ("fig3_histogram_equalization", "fig4_iou_masks", "fig5_iou_distribution", "fig6_confusion_matrices"):
        assert (mrp / "figures" / f"{stem}.png").is_file() and (mrp / "figures" / f"{stem}.pdf").is_file()
    # the three experiments share one test split
    splits = [pd.read_csv(results / "experiments" / f"mr_exp{k}" / "split.csv") for k in (1, 2, 3)]
    assert all(set(s.loc[s["split"] == "test", "image_id"]) == set(per["image_id"]) for s in splits)


@pytest.mark.slow
def test_transfer_multidataset(tiny_run):
    """transfer_multidataset: every stage's tables and figures, the thesis' tables compared."""
    results, cfg, tmp_path = tiny_run
    # transfer_multidataset: every stage's table and figure; stage 2 ran on the stage-1 choice
    tm = results / "papers" / "transfer_multidataset"
    for stem in ("table4_1_split_counts", "table5_1_batch_size_TC", "tableB3_ER", "table5_4_B4_learning_rate",
                 "table5_5_augmentation", "table5_6_fine_tuning", "tableB6_fine_tuning_per_class", "table5_8_best"):
        assert (tm / "tables" / f"{stem}.tex").is_file(), stem
    for stem in ("fig5_1_batch_size_TC", "fig5_4_learning_rate", "fig5_5_confusion_before_after", "fig5_6_loss",
                 "fig6_2_predictions_C19", "figA_1_augmentation"):
        assert (tm / "figures" / f"{stem}.pdf").is_file(), stem
    er = json.loads((results / "studies" / "tm_ER" / "metrics.json").read_text())  # RFMiD's own split kept
    assert {k: sum(v.values()) for k, v in er["split_counts"].items()} == {"train": 6, "val": 3, "test": 3}
    tc = results / "studies" / "tm_TC"
    assert len(pd.read_csv(tc / "stage1" / "runs.csv")) == 6  # 3 backbones x 2 batch sizes
    sel = json.loads((tc / "stage1" / "selection.json").read_text())
    runs2 = pd.read_csv(tc / "stage2" / "runs.csv")
    assert (runs2["backbone"] == sel["backbone"]).all() and (runs2["batch_size"] == sel["batch_size"]).all()
    b58 = pd.read_csv(tm / "tables" / "table5_8_best.csv")
    assert len(b58) == 6  # each dataset's choice (on val in the demo) and what test would have picked
    assert b58.drop_duplicates("dataset").set_index("dataset").loc["TC", "batch_size"] == sel["batch_size"]
    assert b58["chosen_by"].str.startswith("test (alternative").sum() == 3
    # Table B.6: per class correct + incorrect = total, summing to the average/total row; Table 5.7
    b6 = pd.read_csv(tm / "tables" / "tableB6_fine_tuning_per_class.csv")
    tc6 = b6[b6["dataset"] == "TC"]
    per_class, pt = tc6.iloc[:-1], tc6.iloc[-1]
    assert ((per_class["correct_b"] + per_class["incorrect_b"]) == per_class["total"]).all()
    assert per_class["correct_b"].sum() == pt["correct_b"] and per_class["total"].sum() == pt["total"]
    assert pt["accuracy_b"] == pytest.approx(pt["correct_b"] / pt["total"])
    t57 = pd.read_csv(tm / "tables" / "table5_7_before_after.csv")
    assert len(t57) == 6 and set(t57["dataset"]) == {"TC", "C19", "ER"}
    assert set(t57["model"]) == {"a (stage 2)", "b (stage 4)"}   # one definition: the table and its comparison rows
    # the thesis' tables compared row by row, every test score with its interval (stage 1's runs too)
    tmc = pd.read_csv(tm / "tables" / "comparison.csv")
    runs_rows = tmc[tmc["metric"].str.contains("best batch size: ")]
    totals = runs_rows["metric"].str.contains("total")
    assert len(runs_rows) == 3 * 3 * 7 and totals.sum() == 9
    assert runs_rows.loc[~totals, ["ci_low", "ci_high"]].notna().all().all()
    assert runs_rows.loc[totals, "ci_low"].isna().all()  # the test set fixes it: no interval
    assert (runs_rows.loc[totals, "verdict"] == "a count the test set fixes").all()
    # one row per number: the stage-2 model's scores, printed in Tables 5.5, 5.6, 5.7, B.5 and B.6, are one
    # row each, the other tables listed beside it
    a55 = tmc.set_index("metric").loc["Table 5.5 TC a (stage 2): precision"]
    assert "Table 5.7 TC a (stage 2)" in a55["also"] and "Table B.6 TC a (stage2), mean" in a55["also"]
    assert not tmc["metric"].str.startswith("Table 5.7 TC a").any()
    rows57 = " ; ".join(tmc["metric"].tolist() + tmc["also"].fillna("").tolist())
    assert "Table 5.7 TC b (stage4)" in rows57 and not re.search(r"Table 5\.7 \w+ b \(stage[23]\)", rows57)
    cov = pd.read_csv(tm / "tables" / "published_values.csv")
    assert (cov.set_index("published path").loc["reported.table5_7_before_after.TC.a.0", "row or detail"]
            == "tm_TC: Table 5.5 TC a (stage 2): precision")
    assert len(cov) == 896 and set(cov["status"]) == {"compared", "not compared"}
    assert (cov.loc[cov["status"] == "not compared", "reason"] != "no comparison row configured").all()
    params = pd.read_csv(tm / "tables" / "model_parameters.csv")
    assert len(params) == 9 and (params["selected"] == "yes").sum() == 3
    # calibration of each study's best configuration, from that stage's test predictions
    from sklearn.metrics import brier_score_loss

    cal = pd.read_csv(tm / "tables" / "calibration.csv").set_index("experiment")
    assert set(cal.index) == {"tm_TC", "tm_C19", "tm_ER"}
    m = json.loads((tc / "metrics.json").read_text())
    best = pd.read_csv(tc / f"stage{m['best']['stage']}" / "predictions.csv")
    best = best[best["split"] == "test"]
    proba = best.filter(like="prob_").to_numpy()
    assert cal.loc["tm_TC", "brier"] == pytest.approx(brier_score_loss(best["target"], proba,
                                                                      labels=range(proba.shape[1])), abs=1e-6)
    assert cal.loc["tm_TC", "n"] == len(best) and (tm / "figures" / "reliability_tm_TC.png").is_file()


@pytest.mark.slow
def test_replanning_and_narrow_params(tiny_run):
    """A new stage-1 choice re-plans stage 2; a finished run plans nothing; each step reruns only for its
    own settings."""
    results, cfg, tmp_path = tiny_run
    tc = results / "studies" / "tm_TC"
    sel = json.loads((tc / "stage1" / "selection.json").read_text())
    # new stage-1 results re-plan stage 2: another selection asks for that backbone's features
    other = next(b for b in ("vgg16", "resnet50", "inception_v3") if b != sel["backbone"])
    sel_file = tc / "stage1" / "selection.json"
    kept, stat = sel_file.read_text(), sel_file.stat()
    sel_file.write_text(json.dumps({**sel, "backbone": other}))
    plan = run(["-n", "-p", "--configfile", str(cfg), "--nolock", str(tc / "stage2" / "runs.csv")])
    text = plan.stdout + plan.stderr
    assert "study_stage2" in text and f"features/brain_tumor/{other}_" in text, text[-3000:]
    sel_file.write_text(kept)
    os.utime(sel_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    # nothing left to do on a second run
    dry = run(["-n", "--configfile", str(cfg), "--nolock"])
    assert "Nothing to be done" in dry.stdout + dry.stderr

    # each step's params hold only what it depends on: an evaluation setting re-evaluates, a
    # prediction setting re-predicts, neither retrains; a training setting retrains
    def planned(change: dict) -> dict:
        over = tmp_path / "change.yaml"
        over.write_text(yaml.safe_dump(change))
        out = run(["-n", "--configfile", str(cfg), str(over), "--nolock"])
        text = out.stdout + out.stderr
        assert out.returncode == 0, text[-3000:]
        if "Nothing to be done" in text:
            return {}
        table = text.split("Job stats:", 1)[1].split("total", 1)[0]
        jobs = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
        jobs.pop("all", None)  # the default target: planned whenever anything is
        return jobs

    assert planned({"experiments": {"mr_exp2": {"detect": {"score_threshold": 0.5, "iou_threshold": 0.5}}}}) == \
        {"evaluate_detector": 1, "publish_paper": 1, "checklists": 1, "report": 1, "html_report": 1}
    assert planned({"experiments": {"cnn_kermany": {"threshold": 0.4}}}) == \
        {"predict": 1, "evaluate": 1, "publish_paper": 1, "checklists": 1, "report": 1, "html_report": 1}
    assert planned({"experiments": {"mr_exp2": {"train": {"lr": 0.02}}}}) == \
        {"train_detector": 1, "predict_detector": 1, "evaluate_detector": 1, "publish_paper": 1, "checklists": 1,
         "report": 1, "html_report": 1}
    assert planned({"experiments": {"cnn_kermany": {"model": {"input_size": [40, 40]}}}}) == \
        {"train": 1, "predict": 1, "evaluate": 1, "publish_paper": 1, "checklists": 1, "report": 1, "html_report": 1}
    # a study stage reruns for its own settings only: fine-tuning's epochs retrain stage 4 alone, the
    # augmented stage's epochs stage 3 and 4 (stage 4 starts from the better of stages 2 and 3:
    # fine_tune.start best_of_2_3), not stages 1-2
    after = {"study_summary": 1, "publish_paper": 1, "checklists": 1, "report": 1, "html_report": 1}
    assert planned({"studies": {"tm_TC": {"fine_tune": {"epochs": 2}}}}) == {"study_stage4": 1, **after}
    assert planned({"studies": {"tm_TC": {"augment_epochs": 1}}}) == {"study_stage3": 1, "study_stage4": 1, **after}


@pytest.mark.slow
def test_audits_in_the_report(tiny_run):
    """The audit of the published tables and the leakage audit: in the report, every planted copy found."""
    results, cfg, tmp_path = tiny_run
    report = (results / "report.md").read_text()
    audit = json.loads((results / "experiments" / "cnn_kermany" / "split_audit.json").read_text())
    # the audit of the published tables and the leakage audit, in the report; every planted copy found
    assert "## Audit of the published tables" in report and "## Leakage audit" in report
    assert report.count("### Audit of the published tables:") == len(PAPERS)
    planted = pd.read_csv(results / "leakage" / "audit" / "planted.csv")
    # 2 identical and 2 near copies in each of 3 stand-ins, and the covid stand-in's copies of Kermany's pictures
    across = json.loads((results / "raw" / "covid" / "SYNTHETIC.json").read_text())["planted_across"]
    assert len(across) >= 2 and len(planted) == 12 + len(across) and (planted["found"] == "yes").all(), planted
    leaks = pd.read_csv(results / "leakage" / "audit" / "leakage.csv").set_index("split of")
    assert leaks.loc["cnn_kermany", "patients in two splits"] == audit["overlap_groups_after"]
    assert leaks.loc["cnn_kermany", "patients in two splits before overlap handling"] == audit["overlap_groups_found"]
    assert set(leaks.index) >= {"cnn_kermany", "mr_exp1", "tm_TC", "covid vs kermany", "covid vs rsna"}
    pair = leaks.loc["covid vs kermany"]
    assert pair["identical across splits"] + pair["near-duplicates across splits"] >= len(across)
    assert not any("__by_" in name for name in leaks.index)   # the inflation arms are reported below


def test_source_probe_beside_the_covid_study(tiny_run):
    """The COVID-19 task's source probe: its table and the class-by-collection counts, in the
    transfer_multidataset section of the report (the study that uses the covid data)."""
    results, cfg, tmp_path = tiny_run
    probe = pd.read_csv(results / "probe" / "covid" / "probe.csv")
    assert probe["images of"].iloc[0] == "all classes" and probe["images"].iloc[0] == 13
    counts = pd.read_csv(results / "probe" / "covid" / "classes_by_source.csv").set_index("class")
    assert counts.to_numpy().sum() == 13 and counts.loc["Viral Pneumonia", "chest-xray-pneumonia"] == 4
    report = (results / "report.md").read_text()
    tm = report.split("## transfer_multidataset:", 1)[1].split("\n## ", 1)[0]
    assert "### Source probe: covid" in tm and report.count("### Source probe:") == 1


def test_reporting_checklists(tiny_run):
    """Each paper's TRIPOD+AI and CLAIM 2024 items: every file this reproduction names exists, and
    what a run did not make for a paper (its leakage inflation) reads "no"."""
    results, cfg, tmp_path = tiny_run
    report = (results / "report.md").read_text()
    assert report.count("### Reporting checklists (TRIPOD+AI, CLAIM 2024)") == len(CHECKLISTED)
    for paper in CHECKLISTED:
        t = pd.read_csv(results / "checklists" / f"{paper}.csv", dtype=str, keep_default_na=False)
        assert len(t) == 52 + 44
        named = t[t["reproduction"].isin(["yes", "partly"]) & (t["file"] != "report.md")]
        assert len(named) > 20 and all((results / f).exists() for f in named["file"]), paper
        robustness = t[(t["checklist"] == "CLAIM 2024") & (t["item"] == "30")].iloc[0]
        paired = paper in ("transfer_kermany", "transfer_multidataset")   # the demo's inflation pairs
        assert robustness["reproduction"] == ("partly" if paired else "no"), (paper, robustness.to_dict())


def test_leakage_inflation(tiny_run):
    """The demo's inflation pairs (tk_resnet50, and the TC study at VGG-16): both arms tested on the
    same images, the table's scores recomputed from the predictions, a section in the report."""
    results, cfg, tmp_path = tiny_run
    table = pd.read_csv(results / "inflation" / "inflation.csv")
    assert set(table["run"]) == {"tk_resnet50", "tm_TC"}
    assert set(table["metric"]) == {"accuracy", "balanced accuracy", "macro F1"}
    for run_name in ("tk_resnet50", "tm_TC"):
        arms = {arm: pd.read_csv(results / "experiments" / f"{run_name}__by_{arm}" / "predictions.csv")
                for arm in ("image", "patient")}
        tests = {arm: p[p["split"] == "test"].set_index("image_id") for arm, p in arms.items()}
        assert set(tests["image"].index) == set(tests["patient"].index)
        acc = {arm: float((t["target"] == t["pred"]).mean()) for arm, t in tests.items()}
        row = table[(table["run"] == run_name) & (table["metric"] == "accuracy")].iloc[0]
        assert row["split by image"] == pytest.approx(acc["image"], abs=1e-4)
        assert row["split by patient"] == pytest.approx(acc["patient"], abs=1e-4)
        assert row["ci_low"] <= row["inflation"] <= row["ci_high"]
        assert row["test images"] == len(tests["image"])
        audit = json.loads((results / "experiments" / f"{run_name}__by_image" / "split_audit.json").read_text())
        assert row["test patients seen in training"] == audit["test_patients_seen_in_training"]
        splits = {arm: pd.read_csv(results / "experiments" / f"{run_name}__by_{arm}" / "split.csv")
                  for arm in ("image", "patient")}
        counts = {arm: s["split"].value_counts().to_dict() for arm, s in splits.items()}
        assert counts["image"] == counts["patient"]
    for paper in ("transfer_kermany", "transfer_multidataset"):
        assert (results / "inflation" / f"{paper}.tex").is_file()
    report = (results / "report.md").read_text()
    section = report.split("## Leakage inflation", 1)[1].split("\n## ", 1)[0]
    assert "`tm_TC` (brain_tumor)" in section and "### transfer_kermany" in section


@pytest.mark.slow
def test_no_figure_has_a_layout_problem(tiny_run):
    """Every figure was checked for overlapping texts and unlabelled axes when saved."""
    results, cfg, tmp_path = tiny_run
    # every figure was checked for overlapping texts and unlabelled axes when saved: none
    problems = [line for log in sorted((results / "logs" / "publish").glob("*.log"))
                for line in log.read_text().splitlines() if line.startswith("figure ")]
    assert problems == [], problems[:20]


@pytest.mark.slow
def test_html_report_in_a_browser(tiny_run):
    """The HTML report opens in a real browser: every image loads, every link resolves."""
    results, cfg, tmp_path = tiny_run
    # the HTML report opens in a real browser: every image loads, every link resolves
    html_dir = results / "html"
    pages = sorted(html_dir.glob("*.html"))
    assert {p.stem for p in pages} == {"index", *PAPERS}
    if shutil.which("chromium"):
        for page in pages:
            images, links = browser_check(page)
            assert images or page.stem == "index", page
            assert [src for src, ok in images if not ok] == [], page
            broken = [h for h in links if h.startswith("file://") and not Path(h[7:].split("#")[0]).exists()]
            assert links and broken == [], (page, broken)
            assert not [h for h in links if not h.startswith("file://")], page
    tm_page = (html_dir / "transfer_multidataset.html").read_text()
    assert "Reproduces the paper's fig5_5" in html.unescape(tm_page)


@pytest.mark.slow
def test_snakemake_report(tiny_run):
    """snakemake --report: every paper's figures and tables, captioned, in a self-contained zip."""
    results, cfg, tmp_path = tiny_run
    # snakemake --report: every paper's figures and tables, captioned, in a self-contained zip
    rep = run(["--configfile", str(cfg), "--nolock", "--report", str(tmp_path / "report.zip")])
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    import zipfile
    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    assert any(n.endswith("fig5_5_confusion_before_after.png") for n in names), names[:20]
    assert any(n.endswith("findings.csv") for n in names) and any(n.endswith("leakage.csv") for n in names)


@pytest.mark.slow
def test_latex_tables_compile(tiny_run):
    """Every LaTeX table compiles in a minimal document (Debian's texlive where installed), fits
    its page (no overfull box) and loses no row (no float too large for its page)."""
    from medrepro.tables import LATEX_PACKAGES

    results, cfg, tmp_path = tiny_run
    if shutil.which("pdflatex"):
        tex = sorted((results / "papers").glob("*/tables/*.tex"))
        assert len(tex) > 30
        doc = tmp_path / "latex" / "tables.tex"
        doc.parent.mkdir()
        doc.write_text(f"\\documentclass{{article}}\n\\usepackage{{{','.join(LATEX_PACKAGES)}}}\n\\begin{{document}}\n"
                       + "".join(f"\\input{{{t}}}\n\\clearpage\n" for t in tex) + "\\end{document}\n")
        out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=doc.parent,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-3000:]
        assert (doc.parent / "tables.pdf").stat().st_size > 10_000
        log = (doc.parent / "tables.log").read_text(errors="replace")
        over = [float(x) for x in re.findall(r"Overfull \\hbox \((\d+\.?\d*)pt too wide\)", log)]
        assert not [x for x in over if x > 1.0], sorted(over)[-5:]
        assert "Float too large for page" not in log
        # every page is the article's (US letter, or turned) and no row is lost:
        # each table's rows are found in the PDF's text
        assert pdf_page_sizes(doc.parent / "tables.pdf") <= {(612.0, 792.0), (792.0, 612.0)}
        assert not pdf_rows_missing(doc.parent / "tables.pdf", tex)


def test_bad_config_value_stops_with_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"results": str(tmp_path / "r"),
                                   "datasets": {"kermany": {"synthetic": {"difficulty": 2}}}}))
    proc = run(["-n", "--configfile", str(cfg), "--nolock"])
    assert proc.returncode != 0
    assert "datasets.kermany.synthetic.difficulty: 2 is above the maximum 1" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_every_output_kind_writes_its_files(tiny_run):
    """Every output kind the package offers is used by some paper of the run, and each configured
    output wrote its table (CSV with rows, Markdown, LaTeX) or figure (PNG and PDF, not empty)."""
    from medrepro.config import load_config
    from medrepro.publish.outputs import OUTPUTS

    results, cfg, _ = tiny_run
    config = load_config(REPO / "config", [cfg])
    used = {o["kind"] for p in config["papers"].values() for o in p.get("outputs", [])}
    assert used == set(OUTPUTS), f"kinds no paper uses: {set(OUTPUTS) - used}; unknown kinds: {used - set(OUTPUTS)}"
    for paper, p in config["papers"].items():
        d = results / "papers" / paper
        for o in p.get("outputs", []):
            tables = [d / "tables" / f"{o['name']}.{ext}" for ext in ("csv", "md", "tex")]
            figures = [d / "figures" / f"{o['name']}.{ext}" for ext in ("png", "pdf")]
            wrote = [f for f in tables + figures if f.is_file()]
            assert wrote, f"{paper}: output {o['name']} ({o['kind']}) wrote nothing"
            assert all(f.stat().st_size > 0 for f in wrote), (paper, o["name"])
            if tables[0].is_file():
                assert all(t.is_file() for t in tables) and len(pd.read_csv(tables[0])) > 0, (paper, o["name"])
            if figures[0].is_file():
                assert figures[1].is_file(), (paper, o["name"])


def test_a_papers_table_footer_names_its_runs_config(tiny_run):
    """A paper's tables carry one config digest (in provenance.json and under every table): it covers
    the paper's block and the config digest each run recorded in its metrics.json, so tables made
    from a run of other settings say so."""
    from medrepro.config import load_config
    from medrepro.departures import resolved_departures
    from medrepro.plan import Plan
    from medrepro.publish.paper import publish_paper

    results, cfg, tmp_path = tiny_run
    config = load_config(REPO / "config", [cfg])
    paper = "cnn_pediatric"
    inputs: dict = {}
    for key, path in Plan(config, str(results)).paper_inputs(paper).items():
        exp, kind = key.split("__")
        inputs.setdefault(exp, {})[kind] = path
    block = {**config["papers"][paper], "departures": resolved_departures(config, paper)}

    def footer(inp, out):
        publish_paper(paper, block, inp, tmp_path / out, style=config["figures"], scale=config["scale"],
                      verdict=config["verdict"])
        digest = json.loads((tmp_path / out / "provenance.json").read_text())["publish"]["config_sha256"]
        assert f"config {digest};" in (tmp_path / out / "tables" / "comparison.md").read_text()
        return digest

    same = footer(inputs, "same")
    assert same == json.loads((results / "papers" / paper / "provenance.json").read_text())["publish"]["config_sha256"]
    metrics = json.loads(Path(inputs[paper]["metrics"]).read_text())
    metrics["provenance"]["config_sha256"] = "0" * 16  # a run of other settings
    other_metrics = tmp_path / "other_metrics.json"
    other_metrics.write_text(json.dumps(metrics))
    assert footer({**inputs, paper: {**inputs[paper], "metrics": str(other_metrics)}}, "other") != same


@pytest.mark.slow
def test_a_sixth_paper_is_three_files_in_its_folder(tmp_path):
    """Adding a paper on existing kinds takes one folder of three files and no other edit: here a
    sibling's runs under new names (cnn_kermany's, as ``sixth``), its published numbers and its tiny
    sizes. The workflow plans it beside the five (every rule that serves a paper: one job more) and
    the tiny run makes its tables, figures and comparison."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", "results*", ".snakemake", "__pycache__", ".pytest_cache"))
    sibling, folder = REPO / "config" / "papers" / "cnn_kermany", repo / "config" / "papers" / "sixth"
    folder.mkdir()
    runs = yaml.safe_load((sibling / "runs.yaml").read_text().replace("cnn_kermany", "sixth"))
    del runs["papers"]["sixth"]["checklist"]  # optional: three files make a paper
    (folder / "runs.yaml").write_text(yaml.safe_dump(runs, sort_keys=False))
    shutil.copy(sibling / "published.yaml", folder / "published.yaml")
    (folder / "tiny.yaml").write_text((sibling / "tiny.yaml").read_text().replace("cnn_kermany", "sixth"))
    assert sorted(p.name for p in folder.iterdir()) == ["published.yaml", "runs.yaml", "tiny.yaml"]
    results = tmp_path / "results"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(results)))
    plan = run(["-n", "--cores", "2", "--configfile", str(cfg), "--nolock"], cwd=repo)
    assert plan.returncode == 0, plan.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout.split("Job stats:", 1)[1].split("total", 1)[0], re.M))
    assert int(counts["publish_paper"]) == len(PAPERS) + 1 and int(counts["audit_paper"]) == len(PAPERS) + 1
    proc = run([str(results / "papers" / "sixth"), "--cores", "2", "--configfile", str(cfg), "--nolock", "-q"],
               cwd=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    paper = results / "papers" / "sixth"
    comp = pd.read_csv(paper / "tables" / "comparison.csv")
    assert set(comp["experiment"]) == {"sixth"} and comp["reproduced"].notna().all() and len(comp) >= 8
    for f in ("tables/classification_report.csv", "figures/confusion_matrix.pdf", "figures/learning_curves.png"):
        assert (paper / f).is_file(), f
    pred = pd.read_csv(results / "experiments" / "sixth" / "predictions.csv")
    assert (pred["split"] == "test").sum() == 12  # the sibling's tiny test split, under the new name
