"""The real-data DAG plans: config/full.yaml, alone and with profiles/slurm, and one target per paper."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, paper_folders

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PAPERS = paper_folders()
# rules that run on the submitting node under profiles/slurm: downloads, and seconds of work that
# would wait in a busy queue longer than they run
LOCAL = {"download", "download_weights", "split", "study_split", "annotate", "contact_sheet", "evaluate",
         "leakage", "study_summary", "audit_paper", "publish_paper", "report", "html_report", "seed_repeats",
         "inflation", "checklists"}


def dry_run(*args: str) -> str:
    proc = subprocess.run([SNAKEMAKE, "-n", "--nolock", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def job_counts(out: str) -> dict[str, int]:
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def local_rules() -> set[str]:
    """The rules of workflow/rules/*.smk that say ``localrule: True``."""
    text = "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    blocks = re.split(r"\n(?=(?:rule|checkpoint) \w+:\n)", text)
    return {re.match(r"\w+ (\w+):", b)[1] for b in blocks
            if re.match(r"(?:rule|checkpoint) \w+:\n", b) and "\n    localrule: True\n" in b}


def rule_resources(out: str, rule: str) -> list[str]:
    """The 'resources:' lines of the planned jobs of ``rule``."""
    blocks = re.split(r"\n(?=\[.*\]\n(?:rule|checkpoint|localrule) )", out)
    return [re.search(r"resources: (.*)", b)[1] for b in blocks if re.search(rf"\n(?:rule|checkpoint) {rule}:", b)]


@pytest.mark.parametrize("profile", [[], ["--profile", "profiles/slurm", "--cores", "64"]], ids=["local", "slurm"])
def test_full_config_plans_every_paper(profile):
    out = dry_run("--configfile", "config/full.yaml", *profile)
    n = job_counts(out)
    full = yaml.safe_load((REPO / "config" / "full.yaml").read_text())
    assert n["download"] == len(full["datasets"]) and "synthesize" not in n
    assert n["download_weights"] == sum(w in ("imagenet", "keras") for w in full["weights"].values())
    # the transfer papers' backbones: the Keras applications' files, and Keras' networks on their features
    keras_files = set(re.findall(r"output: results-full/weights/(\w+)\.h5", out))
    assert keras_files == {"vgg16", "vgg19", "resnet50", "inception_v3", "efficientnet_b4"}
    assert "output: results-full/weights/maskrcnn_resnet50_fpn.pth" in out
    features = set(re.findall(r"output: results-full/features/\w+/(\w+)\.pt", out))
    assert features and all("_keras_" in f for f in features), features
    assert any(f.startswith("vgg16_keras_224x224_c3_caffe") for f in features)
    assert n["publish_paper"] == len(PAPERS) and n["report"] == 1
    # 8 classifiers, and 9 leakage-inflation pairs (the 8 on Kermany and the thesis' TC task) of two arms each
    assert n["train"] == 8 + 2 * 9 and n["train_detector"] == 3 and n["study_stage1"] == 3 and n["inflation"] == 1
    assert n["features"] == 9  # 3 backbones per study (transfer_kermany augments: full forward passes)
    assert sum(n.values()) < 200  # nothing per image: the DAG stays small whatever the data size
    assert "The run involves checkpoint jobs" in out  # stage 1 of the studies re-plans stages 2-4
    if profile:
        # the cluster profile's threads and resources reach the jobs (profiles/default does not override them)
        assert re.search(r"rule train:.*?threads: 8", out, re.S)
        for rule in ("train", "train_detector", "predict_detector", "predict", "study_stage1"):
            res = rule_resources(out, rule)
            assert res and all("gpu=1" in r for r in res), (rule, res)
        assert all("gpu=" not in r for r in rule_resources(out, "convert") + rule_resources(out, "evaluate_detector"))
        # light rules stay off the queue (tests/test_slurm.py sees them run on the submitting
        # node); the profile gives resources only to rules it submits
        assert local_rules() == LOCAL and LOCAL - {"seed_repeats", "html_report"} <= set(n)
        prof = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
        assert not (set(prof["set-threads"]) | set(prof["set-resources"])) & LOCAL
        assert all("runtime=720" in r and "mem_mb=64000" in r for r in rule_resources(out, "train_detector"))


@pytest.mark.parametrize("paper", PAPERS)
def test_one_target_per_paper_plans_only_its_jobs(paper):
    """`snakemake <paper>` plans that paper alone, and reads exactly the datasets and weights
    medrepro.plan.needs names (what `medrepro doctor <paper>` checks)."""
    from medrepro.config import load_config
    from medrepro.plan import needs

    out = dry_run(paper, "--configfile", "config/full.yaml")
    n = job_counts(out)
    assert n["publish_paper"] == 1 and "report" not in n and n[paper] == 1
    want = needs(load_config(REPO / "config", [REPO / "config" / "full.yaml"]), [paper])
    assert set(re.findall(r"results-full/raw/(\w+)", out)) == want.datasets
    downloaded = set(re.findall(r"output: results-full/weights/(\w+)\.(?:h5|pth)", out))
    assert downloaded == want.weights, (downloaded, want.weights)


def test_slurm_profile_is_not_overridden_by_the_workflow_profile():
    """Snakemake loads profiles/default whatever --profile says: it must hold no cluster-relevant key."""
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert not set(default) & {"set-threads", "set-resources", "default-resources", "retries", "jobs", "keep-going",
                               "executor", "cores", "resources"}
    assert slurm["retries"] >= 1 and "attempt" in str(slurm["set-resources"]["train_detector"]["runtime"])


def test_seed_repeats_plan_one_training_per_seed_on_the_same_split(tmp_path):
    over = tmp_path / "repeats.yaml"
    over.write_text(yaml.safe_dump({"repeats": {"seeds": 2, "experiments": ["cnn_kermany", "mr_exp1"]}}))
    n = job_counts(dry_run("--configfile", "config/full.yaml", str(over)))
    assert n["train"] == 8 + 18 + 2 and n["train_detector"] == 3 + 2 and n["seed_repeats"] == 1
    from medrepro.config import load_config

    cfg = load_config(REPO / "config", [REPO / "config" / "full.yaml", over])
    e, r = cfg["experiments"]["cnn_kermany"], cfg["experiments"]["cnn_kermany__seed2"]
    assert r["train"]["seed"] == e["train"]["seed"] + 2 and r["split"] == e["split"]


def test_inflation_pairs_two_arms_of_one_run_and_names_what_it_cannot_pair(tmp_path):
    """Config `inflation`: each listed experiment, or study at a named configuration, becomes two runs
    that differ only in their split's arm; an unknown name or backbone is a config error."""
    from medrepro.config import ConfigError, inflation_pairs, load_config

    cfg = load_config(REPO / "config", [REPO / "config" / "full.yaml"])
    pairs = inflation_pairs(cfg["experiments"])
    assert set(pairs) == set(cfg["inflation"]["experiments"]) | {"tm_TC"}
    img, pat = (cfg["experiments"][pairs["tk_resnet50"][arm]] for arm in ("image", "patient"))
    base = cfg["experiments"]["tk_resnet50"]
    assert img["split"] == {**base["split"], "arm": "image"} and pat["split"] == {**base["split"], "arm": "patient"}
    assert {k: v for k, v in img.items() if k != "split"} == {k: v for k, v in pat.items() if k != "split"}
    assert img["model"] == base["model"] and img["train"] == base["train"]
    tc = cfg["experiments"][pairs["tm_TC"]["image"]]   # the study's run at VGG-16, batch 32, on its own split
    assert tc["model"]["backbone"] == "vgg16" and tc["train"]["batch_size"] == 32
    assert tc["paper"] == "transfer_multidataset" and tc["split"]["seed"] == cfg["studies"]["tm_TC"]["split"]["seed"]
    # a validated config validates again to the same runs (the pairs' arms are valid blocks)
    from medrepro.config import validate_config

    again = validate_config(cfg, REPO / "config" / "schema.yaml")
    assert sorted(again["experiments"]) == sorted(cfg["experiments"]) and again["experiments"][
        pairs["tm_TC"]["patient"]]["split"]["arm"] == "patient"
    for bad, msg in ((({"experiments": ["nope"]}), "inflation.experiments: 'nope' is not an experiment"),
                     (({"experiments": ["mr_exp1"]}), "is a detect experiment"),
                     (({"studies": {"tm_TC": {"backbone": "vgg19"}}}), "not one of the study's backbones")):
        over = tmp_path / "bad.yaml"
        over.write_text(yaml.safe_dump({"inflation": bad}))
        with pytest.raises(ConfigError, match=re.escape(msg)):
            load_config(REPO / "config", [REPO / "config" / "full.yaml", over])


def test_inflation_inputs_and_probed_datasets_name_what_the_rules_read():
    """medrepro.plan's answers for rules inflation and report: each pair's arms' files, and the
    source probe in the sections of the papers whose runs use the dataset (the covid study's)."""
    from medrepro.config import load_config
    from medrepro.plan import inflation_inputs, probed_datasets

    cfg = load_config(REPO / "config")
    pairs = inflation_inputs(cfg, "res")
    assert set(pairs) == {"tk_resnet50", "tm_TC"}
    tc = pairs["tm_TC"]
    assert (tc["paper"], tc["dataset"], tc["model"]) == ("transfer_multidataset", "brain_tumor", "vgg16, batch 32")
    assert tc["classes"] == ["meningioma", "glioma", "pituitary"]
    assert tc["arms"]["patient"] == {"predictions": "res/experiments/tm_TC__by_patient/predictions.csv",
                                     "split": "res/experiments/tm_TC__by_patient/split.csv",
                                     "audit": "res/experiments/tm_TC__by_patient/split_audit.json"}
    assert probed_datasets(cfg) == {**dict.fromkeys(cfg["papers"], []), "transfer_multidataset": ["covid"]}


def test_step_params_leave_out_what_only_later_steps_read():
    """What reruns what (medrepro.plan): training does not see the thresholds, prediction does not
    see the detection evaluation's settings, no step sees the paper; key order does not matter."""
    from medrepro.config import load_config
    from medrepro.plan import STUDY_STAGE_KEYS, split_params, step_params, study_stage_params

    cfg = load_config(REPO / "config")
    mr, cnn = cfg["experiments"]["mr_exp1"], cfg["experiments"]["cnn_kermany"]
    train, evaluate = step_params(mr, "train"), step_params(mr, "evaluate")
    assert "paper" not in train and "paper" not in evaluate and "paper" in mr
    assert "score_threshold" not in train["detect"]
    assert evaluate["detect"]["score_threshold"] == mr["detect"]["score_threshold"]
    assert "threshold" not in step_params(cnn, "train") and "threshold" in step_params(cnn, "predict")
    predict = step_params(mr, "predict")
    assert predict["model"] == mr["model"] and "iou_threshold" not in predict["detect"]
    assert step_params(dict(reversed(list(cnn.items()))), "train") == step_params(cnn, "train")
    assert set(split_params(cnn)) == {"classes", "subset", "split"}
    study = cfg["studies"]["tm_TC"]
    s4 = study_stage_params(study, 4)
    assert "fine_tune" in s4 and "learning_rates" not in s4 and "augment" not in s4
    assert set(study_stage_params(study, 1)) == set(STUDY_STAGE_KEYS[1]) & set(study)


def test_plan_names_each_rules_files():
    """The file names rules read, from medrepro.plan.Plan: a paper's run files under its key, a
    study's later stages once stage 1 has chosen, weights only where a backbone has some, and the
    scheduler's order for the two long chains."""
    from medrepro.config import load_config
    from medrepro.plan import RUN_FILES, Plan, file_key, one_of

    cfg = load_config(REPO / "config")
    cfg["weights"] = {**cfg["weights"], "vgg16": "keras", "resnet50": "/w/resnet50.pth"}
    plan = Plan(cfg, "res")
    inputs = plan.paper_inputs("transfer_multidataset")
    assert inputs["tm_TC__stage4_parameters"] == "res/studies/tm_TC/stage4/parameters.json"
    assert len(inputs) == len(cfg["papers"]["transfer_multidataset"]["experiments"]) * len(RUN_FILES["study"])
    mr = plan.paper_inputs("maskrcnn_opacity")
    assert mr["mr_exp2__annotations_test"] == "res/experiments/mr_exp2/annotations/test.json"
    assert file_key("stage1/runs.csv") == "stage1_runs"
    stage4 = plan.study_stage_inputs("tm_TC", "vgg16", {"model": "stage2/model.pt"}, fine_tune=True)
    assert stage4["weights"] == "res/weights/vgg16.h5" and stage4["model"] == "res/studies/tm_TC/stage2/model.pt"
    start = cfg["studies"]["tm_TC"]["fine_tune"]["start"]
    assert ("model3" in stage4) == (start == "best_of_2_3")
    stage2 = plan.study_stage_inputs("tm_TC", "resnet50", {"selection": "stage1/selection.json"},
                                     features=True, weights=False)
    assert "weights" not in stage2 and stage2["features"] == plan.study_feature_files("tm_TC")["resnet50"]
    assert plan.weights_file("resnet50") == "/w/resnet50.pth" and plan.weights_file("nothing") is None
    assert plan.chain_priority({"experiment": "mr_exp1"}) == 10 and plan.chain_priority({"dataset": "rsna"}) == 10
    assert plan.chain_priority({"study": "tm_TC"}) == 5 and plan.chain_priority({"experiment": "cnn_kermany"}) == 0
    assert plan.ingest_inputs("kermany") == {"raw": "res/raw/kermany"}
    cfg["datasets"]["kermany"] = {**cfg["datasets"]["kermany"], "source": "download"}
    assert Plan(cfg, "res").ingest_inputs("kermany")["checksums"] == "res/raw/kermany.sha256"
    assert re.fullmatch(one_of(["a", "b"]), "b") and not re.fullmatch(one_of([]), "")
    arms = {n for n, e in cfg["experiments"].items() if e.get("inflation_of")}
    assert set(plan.split_folders()) == (set(cfg["experiments"]) - arms) | set(cfg["studies"])
    assert len(plan.all_targets(["png"])) == 2 * len(cfg["datasets"]) + len(cfg["papers"]) + 2
