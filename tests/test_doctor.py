"""``medrepro doctor`` and ``medrepro report``: each check on real config files, folders and
commands (the SLURM partition check against a running SLURM is in test_slurm)."""
from __future__ import annotations

import os
import shutil
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


def test_kaggle_credentials_are_found_where_and_as_kaggle_2_finds_them(tmp_path):
    """kaggle 2.2.4's order: an access token (variable, its file, ~/.kaggle/access_token), an API
    key (kaggle.json in $KAGGLE_CONFIG_DIR, ~/.kaggle if it exists, else $XDG_CONFIG_HOME/kaggle or
    ~/.config/kaggle; the variables override each half), the OAuth login's credentials.json."""
    home = tmp_path / "home"
    home.mkdir()
    assert doctor.kaggle_credentials({}, home).how is None
    # no ~/.kaggle: Linux's XDG folder, as kaggle 2.x on Linux
    xdg = home / ".config" / "kaggle"
    xdg.mkdir(parents=True)
    (xdg / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    (xdg / "kaggle.json").chmod(0o600)
    c = doctor.kaggle_credentials({}, home)
    assert (c.how, c.where, c.notes) == ("API key", str(xdg / "kaggle.json"), ())
    c = doctor.kaggle_credentials({"XDG_CONFIG_HOME": str(tmp_path / "elsewhere")}, home)
    assert c.how is None  # $XDG_CONFIG_HOME moves the folder
    (xdg / "kaggle.json").chmod(0o644)
    assert "chmod 600" in doctor.kaggle_credentials({}, home).notes[0]
    # an existing ~/.kaggle wins over the XDG folder, even without kaggle.json in it
    (home / ".kaggle").mkdir()
    assert doctor.kaggle_credentials({}, home).how is None
    # one half in the file, the other in a variable
    (home / ".kaggle" / "kaggle.json").write_text('{"username": "u"}')
    c = doctor.kaggle_credentials({"KAGGLE_KEY": "k"}, home)
    assert (c.how, c.where) == ("API key", f"{home / '.kaggle' / 'kaggle.json'} and KAGGLE_KEY")
    assert any("one is missing" in n for n in doctor.kaggle_credentials({}, home).notes)
    c = doctor.kaggle_credentials({"KAGGLE_CONFIG_DIR": str(xdg)}, home)
    assert c.where == str(xdg / "kaggle.json")
    (home / ".kaggle" / "kaggle.json").write_text("{not json")
    assert any("not valid JSON" in n for n in doctor.kaggle_credentials({}, home).notes)
    # the OAuth login (kaggle auth login), then access tokens, which come first
    (home / ".kaggle" / "credentials.json").write_text('{"refresh_token": "r", "username": "u"}')
    assert doctor.kaggle_credentials({}, home).how == "OAuth login"
    (home / ".kaggle" / "access_token").write_text("KGAT_0123\n")
    c = doctor.kaggle_credentials({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home)
    assert (c.how, c.where) == ("access token", str(home / ".kaggle" / "access_token"))
    assert doctor.kaggle_credentials({"KAGGLE_API_TOKEN": "KGAT_x"}, home).where == "KAGGLE_API_TOKEN"
    token = tmp_path / "token"
    token.write_text("KGAT_y")
    assert doctor.kaggle_credentials({"KAGGLE_API_TOKEN": str(token)}, home).where == f"{token} (KAGGLE_API_TOKEN)"


# `kaggle competitions files rsna-pneumonia-detection-challenge --page-size 1 --csv` as kaggle 2.2.4
# prints it: with the rules accepted, not accepted (HTTP 403), and with no route to kaggle.com
FILES_OK = "name,size,creationDate\nGCP Credits Request Link - RSNA.txt,55,2018-09-14 02:09:38\n"
FILES_403 = ("403 Client Error: Forbidden for url: https://api.kaggle.com/v1/competitions.CompetitionApiService/"
             "ListDataFiles")
FILES_OFFLINE = ("HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded with url: /v1/competitions"
                 ".CompetitionApiService/ListDataFiles (Caused by NameResolutionError(\"<urllib3.connection."
                 "HTTPSConnection object at 0x7f>: Failed to resolve 'api.kaggle.com'\"))")


def fake_kaggle(folder: Path, files_output: str, files_status: int, version: str = "2.2.4") -> dict:
    """A stand-in ``kaggle`` on PATH answering ``--version`` and ``competitions files`` with
    recorded outputs (the real command needs kaggle.com)."""
    (folder / "files.txt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "files.txt").write_text(files_output)
    executable(folder, "kaggle", f"""case "$1" in
  --version) echo "Kaggle API {version}";;
  competitions) echo "$@" > {folder / 'args'}; {shutil.which('cat')} {folder / 'files.txt'}; exit {files_status};;
  *) exit 2;;
esac""")
    return {"PATH": str(folder)}


def test_each_dataset_says_what_its_source_needs(tmp_path):
    """A public Kaggle dataset needs the command only; a competition also a login and its rules
    accepted (asked of kaggle.com); a download already made needs neither."""
    over = overlay(tmp_path, {"results": str(tmp_path / "res")})
    home = tmp_path / "home"
    home.mkdir()
    c = by_name(run_checks(CONFIG, [FULL, over], env={"PATH": str(tmp_path / "empty")}, home=home))
    assert c["config"].status == OK and "full scale" in c["config"].message
    for ds in ("covid", "kermany", "rfmid", "rsna"):
        assert c[f"datasets.{ds}"].status == FAIL and "'kaggle' command is not installed" in c[f"datasets.{ds}"].message
    assert c["datasets.brain_tumor"].status == OK and "ndownloader.figshare.com" in c["datasets.brain_tumor"].message

    env = fake_kaggle(tmp_path / "bin", FILES_OK, 0)
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=home))
    assert c["datasets.kermany"].status == OK and "without a login" in c["datasets.kermany"].message
    rsna = c["datasets.rsna"]
    assert rsna.status == FAIL and "a competition's files need a Kaggle login" in rsna.message
    assert str(home / ".config" / "kaggle" / "kaggle.json") in c["datasets.rsna"].message
    assert not (tmp_path / "bin" / "args").exists()  # nothing asked of kaggle.com without a login

    (home / ".kaggle").mkdir()
    (home / ".kaggle" / "access_token").write_text("KGAT_0123")
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=home))
    assert c["datasets.rsna"].status == OK and "its rules are accepted" in c["datasets.rsna"].message
    assert "access token from " + str(home / ".kaggle" / "access_token") in c["datasets.rsna"].message
    asked = (tmp_path / "bin" / "args").read_text().split()
    assert asked[:3] == ["competitions", "files", "rsna-pneumonia-detection-challenge"]
    assert "with the access token" in c["datasets.covid"].message

    env = fake_kaggle(tmp_path / "bin", FILES_403, 1)
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=home))
    assert c["datasets.rsna"].status == FAIL
    assert "accept its rules at https://www.kaggle.com/competitions/rsna-pneumonia-detection-challenge/rules" \
        in c["datasets.rsna"].message
    env = fake_kaggle(tmp_path / "bin", FILES_OFFLINE, 1)
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=home))
    assert c["datasets.rsna"].status == WARN and "could not ask kaggle.com" in c["datasets.rsna"].message
    # kaggle 1.x needs a login for public datasets too
    env = fake_kaggle(tmp_path / "bin", FILES_OK, 0, version="1.6.17")
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=tmp_path / "nobody"))
    assert c["datasets.kermany"].status == FAIL and "kaggle 1.6.17 needs a login" in c["datasets.kermany"].message

    # data downloaded by an earlier run (its SHA-256 manifest written) needs neither
    (tmp_path / "res" / "raw").mkdir(parents=True)
    (tmp_path / "res" / "raw" / "rfmid.sha256").write_text("")
    c = by_name(run_checks(CONFIG, [FULL, over], env={"PATH": ""}, home=home))
    assert c["datasets.rfmid"].status == OK and "downloaded already" in c["datasets.rfmid"].message
    assert c["datasets.kermany"].status == FAIL


def test_a_paper_as_target_checks_only_what_that_paper_needs(tmp_path):
    """A new user (no Kaggle token, no GPU here) checking one paper: its dataset, its weights, its
    runs; nothing of the others (RSNA's missing login does not fail cnn_kermany)."""
    over = overlay(tmp_path, {"results": str(tmp_path / "res")})
    env = fake_kaggle(tmp_path / "bin", FILES_OK, 0)
    home = tmp_path / "home"
    home.mkdir()
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=home, targets=["cnn_kermany"]))
    assert [n for n in c if n.startswith(("datasets.", "weights."))] == ["datasets.kermany"]
    assert c["targets"].status == OK and "cnn_kermany: datasets kermany; 1 run(s)" in c["targets"].message
    assert all(x.status != FAIL for x in c.values()), [x for x in c.values() if x.status == FAIL]
    assert "(cnn_kermany)" in c.get("gpu.devices", c.get("gpu.torch")).message  # its one run, not every paper's
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=home, targets=["transfer_kermany"]))
    assert sorted(n for n in c if n.startswith(("datasets.", "weights."))) == [
        "datasets.kermany", "weights.efficientnet_b4", "weights.inception_v3", "weights.resnet50", "weights.vgg19"]
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=home, targets=["maskrcnn_opacity"]))
    assert c["datasets.rsna"].status == FAIL and "weights.maskrcnn_resnet50_fpn" in c
    # snakemake's other targets (a file): everything is checked, and the doctor says why
    c = by_name(run_checks(CONFIG, [FULL, over], env=env, home=home, targets=["results-full/report.md"]))
    assert c["targets"].status == WARN and len([n for n in c if n.startswith("datasets.")]) == 5


def test_doctor_names_the_dicom_decoders_a_local_folder_needs(tmp_path, monkeypatch):
    """JPEG Baseline decodes with Pillow; JPEG Lossless and 12-bit JPEG Extended need the GPL-3.0
    pylibjpeg-libjpeg (the jpeg-lossless extra): with it the folder passes, without it doctor
    names the files, their transfer syntaxes and the extra (the converter's message without the
    decoder: tests/test_project.py's fresh venv)."""
    import importlib.util

    import pydicom.data

    root = tmp_path / "rsna"
    (root / "sub").mkdir(parents=True)
    shutil.copy(pydicom.data.get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"), root / "baseline.dcm")
    shutil.copy(pydicom.data.get_testdata_file("SC_rgb_jpeg_gdcm.dcm"), root / "sub" / "lossless.dcm")
    shutil.copy(pydicom.data.get_testdata_file("JPEG-lossy.dcm"), root / "sub" / "extended12.dcm")
    cfg = {"results": str(tmp_path / "results"), "datasets": {"rsna": {"source": "local", "path": str(root)}}}
    [c] = doctor.dicom_check(cfg, ["rsna"])
    assert c.status == OK and "JPEG Lossless" in c.message and "JPEG Baseline" in c.message, c.message
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "libjpeg" else real(name, *a))
    [c] = doctor.dicom_check(cfg, ["rsna"])
    assert c.status == FAIL and "2 transfer syntax(es)" in c.message, c.message
    assert "lossless.dcm" in c.message and "extended12.dcm" in c.message and "baseline.dcm" not in c.message
    assert c.message.count('pip install -e ".[jpeg-lossless]"') == 2


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


def smi(driver: str, cuda: str) -> str:
    """nvidia-smi's header as the driver prints it."""
    return f"""Mon Nov 23 10:12:01 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver:<22} Driver Version: {driver:<13} CUDA Version: {cuda:<9}|
|-----------------------------------------+------------------------+----------------------+
"""


@pytest.mark.parametrize("built,driver,cuda,status,words", [
    ("12.6", "550.54.15", "12.4", OK, "minor version compatibility"),  # a 12.x driver runs every 12.x build
    ("12.4", "550.54.15", "12.4", OK, "supports CUDA 12.4"),
    ("12.6", "580.65.06", "13.0", OK, "supports CUDA 13.0"),  # a newer driver runs older builds
    ("13.0", "550.54.15", "12.4", FAIL, "a CUDA 13 build needs a CUDA 13 driver (driver 580.65.06 or newer)"),
    ("11.8", "470.82.01", "11.4", OK, "minor version compatibility"),
    ("12.1", "520.61.05", "11.8", FAIL, "driver 525.60.13 or newer"),
])
def test_cuda_compatibility_by_nvidias_rules(built, driver, cuda, status, words):
    c = doctor.cuda_compatibility(built, smi(driver, cuda))
    assert c.status == status and words in c.message, c.message
    assert doctor.cuda_compatibility("12.6", "no header").status == WARN


def test_the_driver_check_runs_nvidia_smi(tmp_path):
    if torch.version.cuda is None:
        pytest.skip("a CPU-only torch")
    (tmp_path / "smi.txt").write_text(smi("550.54.15", "12.4"))
    executable(tmp_path / "bin", "nvidia-smi", f"{shutil.which('cat')} {tmp_path / 'smi.txt'}")
    cfg = {"experiments": {"a": {"train": {"gpus": 1}}}}
    c = by_name(doctor.gpu_checks(cfg, env={"PATH": str(tmp_path / "bin")}))
    assert c["gpu.driver"] == doctor.cuda_compatibility(torch.version.cuda, smi("550.54.15", "12.4"))
    assert "550.54.15" in c["gpu.driver"].message


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
