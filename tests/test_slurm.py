"""The full-settings smoke run through profiles/slurm on a real single-node SLURM.

Runs where the Debian packages munge, slurmctld, slurmd and slurm-client are
installed and the tests run as root (``.ci/run`` installs them when it can);
skipped elsewhere, saying so.  The cluster lives in a temporary folder with two
fake GPUs (links to /dev/null) so that a rule asking for a GPU is scheduled with
one; its jobs then run on the CPU because the config says ``allow_cpu: true``.
Run it alone with ``pytest -m slurm``.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from medrepro.doctor import slurm_checks

from .conftest import REPO, paper_folders
from .test_plan import LOCAL

NEEDED = ("munged", "slurmctld", "slurmd", "sinfo", "squeue")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(shutil.which(x) is None for x in NEEDED) or os.geteuid() != 0,
                       reason="needs root and the Debian packages munge slurmctld slurmd slurm-client"),
]


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def slurm(tmp_path_factory):
    if not (_free(6817) and _free(6818)):
        pytest.skip("SLURM ports 6817/6818 are taken: another SLURM runs here")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log", "run", "munge", "dev"):
        (d / sub).mkdir()
    for i in range(2):
        (d / "dev" / f"fakegpu{i}").symlink_to("/dev/null")
    os.chmod(d, 0o755)
    os.chmod(d / "munge", 0o755)
    # a cluster node as profiles/slurm expects one (64 CPUs, 512 GB, 2 GPUs): slurmd takes the
    # configured size rather than this machine's (config_overrides), so jobs get what they ask;
    # the two GPUs keep the heavy jobs (Mask R-CNN at 1,024 px, the thesis' 100M-parameter
    # heads) two at a time, within this machine's real memory
    cpu = "CPUs=64 Boards=1 SocketsPerBoard=1 CoresPerSocket=64 ThreadsPerCore=1"
    host = socket.gethostname().split(".")[0]  # slurmctld accepts only this host as controller
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=medrepro-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={d}/munge/munge.socket.2
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
MinJobAge=7200
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 {cpu} RealMemory=512000 Gres=gpu:2
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    (d / "gres.conf").write_text(f"AutoDetect=off\nNodeName={host} Name=gpu File={d}/dev/fakegpu[0-1]\n")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "-c"], check=True)
    # the plugin's job step runs a nested srun without SLURM_CONF: the default path must work too
    etc = Path("/etc/slurm")
    etc.mkdir(exist_ok=True)
    made = []
    for name in ("slurm.conf", "gres.conf"):
        if (etc / name).is_symlink() and "pytest" in os.readlink(etc / name):
            (etc / name).unlink()  # left by an earlier run of this test that was killed
        if not (etc / name).exists():
            (etc / name).symlink_to(d / name)
            made.append(etc / name)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run(["munged", f"--socket={d}/munge/munge.socket.2", f"--pid-file={d}/run/munged.pid",
                    f"--log-file={d}/log/munged.log", f"--seed-file={d}/munge/seed", "-f"], check=True)
    subprocess.run(["slurmctld", "-c", "-f", str(conf)], check=True, env=env)
    subprocess.run(["slurmd", "-N", host, "-f", str(conf)], check=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env,
                                     timeout=5).stdout
            except subprocess.TimeoutExpired:
                out = ""
            if "idle" in out:
                break
            time.sleep(0.5)
        else:
            pytest.skip(f"the local SLURM did not come up: {(d / 'log' / 'slurmctld.log').read_text()[-500:]}")
        yield env, d
    finally:
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)  # this test cluster's jobs
        time.sleep(1)
        for pid in ("slurmd", "slurmctld", "munged"):
            p = d / "run" / f"{pid}.pid"
            if p.exists():
                try:
                    os.kill(int(p.read_text().strip()), 15)
                except (ProcessLookupError, ValueError):
                    pass
        for m in made:
            m.unlink()


def write_weights(folder: Path) -> dict[str, str]:
    """The files full.yaml fetches, in their formats (random values: the files and the loading path
    are real, the numbers are not ImageNet's): Keras' legacy .h5 weights of the five transfer
    backbones, written by Keras itself, and a torchvision state dict of the COCO Mask R-CNN."""
    import torch
    import torchvision

    from .classify.test_keras_equivalence import keras_weights_file

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("vgg16", "vgg19", "resnet50", "inception_v3", "efficientnet_b4"):
        keras_weights_file(name, folder / f"{name}_notop.h5", 224 if name != "inception_v3" else 299)
        out[name] = str(folder / f"{name}_notop.h5")
    torch.manual_seed(0)
    model = torchvision.models.get_model("maskrcnn_resnet50_fpn", weights=None, weights_backbone=None)
    torch.save(model.state_dict(), folder / "maskrcnn_resnet50_fpn.pth")
    out["maskrcnn_resnet50_fpn"] = str(folder / "maskrcnn_resnet50_fpn.pth")
    return out


def _jobs(env) -> list[dict]:
    """Every job SLURM knows of (MinJobAge keeps finished ones), as scontrol's key=value fields."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, env=env).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if fields.get("JobId"):
            jobs.append(fields)
    return jobs


def _rule(job: dict) -> str:
    m = re.search(r"rule_(\w+?)_wildcards_(\S*)", job.get("Comment", ""))
    # a rule without wildcards: the comment is just rule_<name> (kept apart from the job name)
    return m[1] if m else re.search(r"rule_(\w+)", job.get("Comment", "") + " " + job.get("JobName", ""))[1]


def _preempt(env, results: Path, experiment: str, done: dict, stop: threading.Event) -> None:
    """Cancel the training job of ``experiment`` once its first epoch checkpoint exists (as a
    preemption or a time limit would), once."""
    ck = results / "experiments" / experiment / "checkpoint.pt"
    while not stop.is_set():
        if ck.exists():
            for j in _jobs(env):
                if j.get("JobState") == "RUNNING" and "rule_train_" in j.get("Comment", "") \
                        and experiment in j.get("Comment", ""):
                    subprocess.run(["scancel", j["JobId"]], env=env, check=True)
                    done["cancelled"] = j["JobId"]
                    return
        time.sleep(0.2)


PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
GPU_RULES = {"train", "predict", "features", "train_detector", "predict_detector", "study_stage1", "study_stage2",
             "study_stage3", "study_stage4"}


def _run_on_slurm(env, tmp_path, configfiles: list[str], overlay: dict, targets: list[str], timeout: int):
    """snakemake --profile profiles/slurm (unmodified) with ``configfiles`` + ``overlay``, while
    cnn_kermany's training job is cancelled once after its first epoch checkpoint."""
    env = {**env, "OMP_WAIT_POLICY": "PASSIVE"}  # many SLURM CPUs share this machine's cores: no spinning
    results = Path(overlay["results"])
    path = tmp_path / "here.yaml"
    path.write_text(yaml.safe_dump(overlay))
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    stop, done = threading.Event(), {}
    watcher = threading.Thread(target=_preempt, args=(env, results, "cnn_kermany", done, stop), daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [snakemake, *targets, "--profile", "profiles/slurm", "--configfile", *configfiles, str(path), "--nolock",
             "--slurm-init-seconds-before-status-checks", "1"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        stop.set()
    out = proc.stdout + proc.stderr
    (tmp_path / "snakemake.log").write_text(out)
    assert proc.returncode == 0, out[-6000:]
    print(f"run on SLURM: {time.monotonic() - t0:.0f} s")
    return results, done, path


def _check_resources(env, done: dict) -> set[str]:
    """Every job got the profile's CPUs, memory, time (longer on a retry) and a GPU exactly
    where its rule asks for one; returns the rules seen."""
    seen = set()
    for j in _jobs(env):
        rule = _rule(j)
        seen.add(rule)
        res = PROFILE["set-resources"].get(rule, {})
        assert int(j["NumCPUs"]) == PROFILE["set-threads"].get(rule, 1), (rule, j["NumCPUs"])
        mem = res.get("mem_mb", PROFILE["default-resources"]["mem_mb"])
        got = j.get("MinMemoryNode", "0M")  # scontrol: 4000M, 62.50G
        got_mb = float(got[:-1]) * {"M": 1, "G": 1024, "T": 1024 ** 2}[got[-1]]
        assert got_mb == mem, (rule, got, mem)
        assert ("gres:gpu:1" in j.get("TresPerJob", "")) == (rule in GPU_RULES), (rule, j.get("TresPerJob"))
        runtime = res.get("runtime", PROFILE["default-resources"]["runtime"])
        retry = rule == "train" and "cnn_kermany" in j["Comment"] and j["JobId"] != done.get("cancelled")
        minutes = eval(str(runtime), {"attempt": 2 if retry else 1, "min": min})  # noqa: S307 - the profile's
        days, rest = divmod(minutes, 1440)
        want = (f"{days}-" if days else "") + f"{rest // 60:02d}:{rest % 60:02d}:00"
        assert j["TimeLimit"] == want, (rule, j["TimeLimit"], want)  # a retry asks for more time
    return seen


def _check_resumed(env, done: dict, results: Path, configfiles: list[Path], tmp_path: Path) -> None:
    """The cancelled training job was retried, resumed from its checkpoint, and ended with the
    history of an uninterrupted run of the same experiment (same thread count)."""
    import pandas as pd
    import torch

    from medrepro.classify import steps
    from medrepro.config import load_config

    assert done.get("cancelled"), "the training job finished before it could be cancelled"
    log = (results / "logs" / "train" / "cnn_kermany.log").read_text()
    assert "resumed from" in log, log[-2000:]
    jobs = [j for j in _jobs(env) if "rule_train_" in j.get("Comment", "") and "cnn_kermany" in j["Comment"]]
    assert len(jobs) >= 2 and any(j["JobState"] == "CANCELLED" for j in jobs)
    cfg = load_config(REPO / "config", configfiles)
    torch.set_num_threads(int(re.search(r"threads=(\d+)", log)[1]))  # as the job ran
    ref = tmp_path / "ref"
    steps.train(results / "experiments" / "cnn_kermany" / "split.csv", cfg["experiments"]["cnn_kermany"],
                   ref / "model.pt", ref / "history.csv")
    got, want = pd.read_csv(results / "experiments" / "cnn_kermany" / "history.csv"), pd.read_csv(ref / "history.csv")
    assert len(got) == len(want) == cfg["experiments"]["cnn_kermany"]["train"]["epochs"]
    for col in ("loss", "val_loss", "val_accuracy"):
        assert got[col].tolist() == pytest.approx(want[col].tolist(), rel=1e-4, abs=1e-6), col


def test_profile_on_slurm_gives_each_job_its_resources_and_resumes_a_cancelled_training(slurm, tmp_path):
    """profiles/slurm, unmodified, on a tiny config up to cnn_kermany's model (four kinds of SLURM
    job; the split on the submitting node)."""
    from .test_workflow import tiny_config

    env, _ = slurm
    # medrepro doctor on the submitting node: the unmodified profile takes the cluster's default
    # partition; a profile naming a partition the cluster lacks fails with the ones it has
    checks = {c.name: c for c in slurm_checks(REPO / "profiles" / "slurm", env)}
    assert checks["slurm.partition"].status == "ok" and "'debug'" in checks["slurm.partition"].message
    (tmp_path / "prof").mkdir()
    prof = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    prof["default-resources"]["slurm_partition"] = "gpu-a100"
    (tmp_path / "prof" / "config.yaml").write_text(yaml.safe_dump(prof))
    checks = {c.name: c for c in slurm_checks(tmp_path / "prof", env)}
    assert checks["slurm.partition"].status == "fail" and "['debug']" in checks["slurm.partition"].message
    cfg = tiny_config(tmp_path / "results")
    cfg["experiments"] = {"cnn_kermany": {"train": {"gpus": 1, "epochs": 25}}}  # epochs long enough to cancel one
    cfg["allow_cpu"] = True
    target = str(tmp_path / "results" / "experiments" / "cnn_kermany" / "model.pt")
    results, done, overlay = _run_on_slurm(env, tmp_path, [], cfg, [target], timeout=900)
    assert Path(target).is_file()
    assert _check_resources(env, done) == {"synthesize", "ingest", "convert", "train"}
    assert (results / "experiments" / "cnn_kermany" / "split.csv").is_file()  # made on the submitting node
    _check_resumed(env, done, results, [overlay], tmp_path)


@pytest.mark.slurm
def test_full_settings_smoke_run_on_slurm(slurm, tmp_path):
    """config/full.yaml + config/smoke.yaml through profiles/slurm, unmodified: every paper's
    outputs; each kind of job gets the profile's CPUs, memory, time and GPUs; a training job
    cancelled mid-run is retried and resumes from its checkpoint to the uninterrupted result."""
    env, _ = slurm
    configs = ["config/full.yaml", "config/smoke.yaml"]
    overlay = {"results": str(tmp_path / "results"), "allow_cpu": True, "weights": write_weights(tmp_path / "w")}
    results, done, path = _run_on_slurm(env, tmp_path, configs, overlay, [], timeout=3000)
    for paper in paper_folders():
        assert list((results / "papers" / paper / "tables").glob("*.csv")), paper
        assert list((results / "papers" / paper / "figures").glob("*.pdf")), paper
    assert "published vs reproduced" in (results / "report.md").read_text()
    summary = (results / "experiments" / "mr_exp1" / "model_summary.csv").read_text()
    assert "maskrcnn_resnet50_fpn.pth" in summary and "runtime: device" in summary  # the COCO-style weights file
    seen = _check_resources(env, done)
    assert GPU_RULES | {"synthesize", "ingest", "convert", "image_hashes", "evaluate_detector"} <= seen, sorted(seen)
    assert not seen & LOCAL, sorted(seen & LOCAL)  # the light rules ran on the submitting node
    _check_resumed(env, done, results, [REPO / c for c in configs] + [path], tmp_path)
