"""``medrepro doctor`` and ``medrepro report``: each check on real config files, folders and
commands (the SLURM partition check against a running SLURM is in test_slurm)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from medrepro import cli, doctor
from medrepro.doctor import FAIL, OK, WARN, run_checks

from .conftest import REPO

CONFIG = REPO / "config"
FULL = CONFIG / "full.yaml"


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def overlay(tmp_path, data: dict, name="over.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def executable(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(exist_ok=True)
    p = folder / name
    p.write_text(f"#!/bin/sh\n{body}\n")
    p.chmod(0o755)
    return p


def test_the_installed_command_passes_the_demo_config():
    """The console script pyproject.toml installs, on the demo config: no failure, no warning."""
    exe = Path(sys.executable).with_name("medrepro")
    out = subprocess.run([str(exe), "doctor"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failure(s), 0 warning(s)" in out.stdout
    for ds in ("brain_tumor", "covid", "kermany", "rfmid", "rsna"):
        assert f"datasets.{ds}" in out.stdout


def test_full_config_kaggle_downloads_need_the_command_and_a_token(tmp_path):
    over = overlay(tmp_path, {"results": str(tmp_path / "res")})
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": str(tmp_path / "empty")}
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=home))
    assert c["config"].status == OK and "full scale" in c["config"].message
    for ds in ("covid", "kermany", "rfmid", "rsna"):
        assert c[f"datasets.{ds}"].status == FAIL and "'kaggle' command is not installed" in c[f"datasets.{ds}"].message
    assert c["datasets.brain_tumor"].status == OK and "ndownloader.figshare.com" in c["datasets.brain_tumor"].message

    executable(tmp_path / "bin", "kaggle", "exit 0")  # found on PATH: the check does not run it
    env = {"PATH": str(tmp_path / "bin")}
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=home))
    assert c["datasets.kermany"].status == FAIL and "no Kaggle API token" in c["datasets.kermany"].message

    (home / ".kaggle").mkdir()
    (home / ".kaggle" / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=home))
    assert c["datasets.kermany"].status == OK and str(home / ".kaggle" / "kaggle.json") in c["datasets.kermany"].message
    assert "rules must be accepted" in c["datasets.rsna"].message
    c = by_name(run_checks(CONFIG, [FULL, over], env={**env, "KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"},
                           home=tmp_path / "nobody"))
    assert c["datasets.covid"].status == OK and "KAGGLE_USERNAME" in c["datasets.covid"].message

    # data downloaded by an earlier run (its SHA-256 manifest written) needs neither
    (tmp_path / "res" / "raw").mkdir(parents=True)
    (tmp_path / "res" / "raw" / "rfmid.sha256").write_text("")
    c = by_name(run_checks(CONFIG, [FULL, over], env={"PATH": ""}, home=home))
    assert c["datasets.rfmid"].status == OK and "downloaded already" in c["datasets.rfmid"].message
    assert c["datasets.kermany"].status == FAIL


def test_local_data_and_weights_paths(tmp_path):
    full = tmp_path / "kermany"
    (full / "train").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    weights = tmp_path / "vgg16.pth"
    weights.write_bytes(b"x")
    over = overlay(tmp_path, {
        "results": str(tmp_path / "res"),
        "datasets": {"kermany": {"source": "local", "path": str(full)},
                     "covid": {"source": "local", "path": str(tmp_path / "empty")},
                     "rfmid": {"source": "local", "path": str(tmp_path / "missing")}},
        "weights": {"vgg16": str(weights), "resnet50": str(tmp_path / "resnet50.pth")}})
    c = by_name(run_checks(CONFIG, [over]))
    assert c["datasets.kermany"].status == OK
    assert c["datasets.covid"].status == FAIL and "is empty" in c["datasets.covid"].message
    assert c["datasets.rfmid"].status == FAIL and f"datasets.rfmid.path: {tmp_path / 'missing'} is not a folder" \
        in c["datasets.rfmid"].message
    assert c["weights.vgg16"].status == OK
    assert c["weights.resnet50"].status == FAIL and "resnet50.pth is not a file" in c["weights.resnet50"].message


def test_an_invalid_config_fails_with_its_key_and_stops_the_checks_that_read_it(tmp_path, capsys):
    over = overlay(tmp_path, {"experiments": {"cnn_kermany": {"train": {"epochs": -1}}}})
    checks = run_checks(CONFIG, [over])
    assert [c.name for c in checks] == ["python", "packages", "config"]
    assert checks[-1].status == FAIL and "experiments.cnn_kermany.train.epochs" in checks[-1].message
    assert cli.main(["doctor", "--config-dir", str(CONFIG), "--configfile", str(over)]) == 1
    assert "1 failure(s)" in capsys.readouterr().out
    assert "run medrepro in the workflow's folder" in run_checks(tmp_path / "config")[-1].message


def test_gpus_asked_for_and_not_seen(tmp_path):
    cfg = {"experiments": {"a": {"train": {"gpus": 1}}, "b": {"train": {"gpus": 0}}}, "studies": {}}
    assert doctor.gpu_checks({"experiments": {"b": {"train": {"gpus": 0}}}})[0].status == OK
    if torch.cuda.is_available() or torch.version.cuda is None:
        pytest.skip("checks the no-GPU case of a CUDA build")
    env = {"PATH": str(tmp_path / "none")}
    login = by_name(doctor.gpu_checks(cfg, env=env))
    assert login["gpu.devices"].status == WARN and "1 run(s) ask for GPUs (a)" in login["gpu.devices"].message
    node = by_name(doctor.gpu_checks(cfg, on_gpu_node=True, env=env))
    assert node["gpu.devices"].status == FAIL and "torch.cuda.device_count()=0" in node["gpu.devices"].message


NVIDIA_SMI = """Mon Nov 23 10:12:01 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""


def test_a_driver_older_than_torchs_cuda_build_fails(tmp_path):
    assert doctor.driver_cuda(NVIDIA_SMI) == "12.4" and doctor.driver_cuda("no header") is None
    if torch.version.cuda is None:
        pytest.skip("a CPU-only torch")
    (tmp_path / "smi.txt").write_text(NVIDIA_SMI)
    executable(tmp_path / "bin", "nvidia-smi", f"cat {tmp_path / 'smi.txt'}")
    cfg = {"experiments": {"a": {"train": {"gpus": 1}}}}
    c = by_name(doctor.gpu_checks(cfg, env={"PATH": str(tmp_path / "bin")}))
    major = int(torch.version.cuda.split(".")[0])
    if major >= 13 or (major == 12 and int(torch.version.cuda.split(".")[1]) > 4):
        assert c["gpu.driver"].status == FAIL and "supports CUDA 12.4 at most" in c["gpu.driver"].message
    else:
        assert c["gpu.driver"].status == OK


def test_slurm_commands_and_profile(tmp_path):
    env = {"PATH": str(tmp_path / "none")}
    c = by_name(doctor.slurm_checks(REPO / "profiles" / "slurm", env))
    assert c["slurm.commands"].status == FAIL and "sbatch or sinfo is not on PATH" in c["slurm.commands"].message
    assert doctor.slurm_checks(tmp_path / "nowhere")[0].status == FAIL
    assert by_name(doctor.slurm_checks(REPO / "profiles" / "default"))["profile"].status == OK  # no executor: local
    # a sinfo that cannot reach a controller (sinfo's own error is passed on)
    executable(tmp_path / "bin", "sbatch", "exit 0")
    executable(tmp_path / "bin", "sinfo", "echo 'sinfo: error: Unable to contact slurm controller' >&2; exit 1")
    c = by_name(doctor.slurm_checks(REPO / "profiles" / "slurm", {"PATH": str(tmp_path / "bin")}))
    assert c["slurm.partition"].status == FAIL and "Unable to contact slurm controller" in c["slurm.partition"].message


def test_packages_against_the_pins(tmp_path):
    pins = tmp_path / "constraints.txt"
    pins.write_text("# pins\nPyYAML==0.0.1\nnot-installed-here==1.0\ntorch==" + torch.__version__ + "\n")
    assert doctor.read_pins(pins) == {"pyyaml": "0.0.1", "not-installed-here": "1.0", "torch": torch.__version__}
    c = doctor.packages_check(pins)
    assert c.status == WARN and "pyyaml" in c.message and "pinned 0.0.1" in c.message
    assert "torch" not in c.message and "not-installed-here" not in c.message
    assert doctor.packages_check(REPO / "constraints.txt").status in (OK, WARN)
    assert doctor.python_check((3, 10, 4)).status == FAIL and doctor.python_check((3, 11, 0)).status == OK


def test_report_points_at_a_finished_runs_pages(tmp_path, capsys):
    res = tmp_path / "res"
    assert cli.main(["report", "--results", str(res), "--no-open"]) == 1
    assert f"no report at {res / 'html' / 'index.html'}" in capsys.readouterr().err
    (res / "html").mkdir(parents=True)
    (res / "html" / "index.html").write_text("<html></html>")
    (res / "report.md").write_text("# report")
    assert cli.main(["report", "--results", str(res), "--no-open"]) == 0
    out = capsys.readouterr().out
    assert str((res / "html" / "index.html").resolve()) in out and str((res / "report.md").resolve()) in out
    # the results folder from the config files given
    over = overlay(tmp_path, {"results": str(res)})
    assert cli.main(["report", "--config-dir", str(CONFIG), "--configfile", str(over), "--no-open"]) == 0
    assert os.fspath((res / "report.md").resolve()) in capsys.readouterr().out
