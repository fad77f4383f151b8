"""The SLURM profile against a real single-node SLURM on this machine.

Runs where the Debian packages munge, slurmctld, slurmd and slurm-client are
installed and the tests run as root (``.ci/run`` installs them when it can);
skipped elsewhere.  The cluster lives in a temporary folder with two fake GPUs
(links to /dev/null) so that a rule asking for a GPU is scheduled with one.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import REPO
from .test_workflow import tiny_config

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
    for i in (0, 1):
        (d / "dev" / f"fakegpu{i}").symlink_to("/dev/null")
    os.chmod(d, 0o755)
    os.chmod(d / "munge", 0o755)
    layout = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout.split()
    cpu = " ".join(w for w in layout if w.split("=")[0] in
                   ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore"))
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
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 {cpu} RealMemory=8000 Gres=gpu:2
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
        for pid in ("slurmd", "slurmctld", "munged"):
            p = d / "run" / f"{pid}.pid"
            if p.exists():
                try:
                    os.kill(int(p.read_text().strip()), 15)
                except (ProcessLookupError, ValueError):
                    pass
        for m in made:
            m.unlink()


def test_profile_runs_the_chain_on_slurm_with_a_gpu_job(slurm, tmp_path):
    env, d = slurm
    cfg = tiny_config(tmp_path / "results")
    cfg["experiments"]["cnn_kermany"]["train"]["gpus"] = 1
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    target = str(tmp_path / "results" / "experiments" / "cnn_kermany" / "model.pt")
    proc = subprocess.run(
        [snakemake, "--profile", "profiles/slurm", "--configfile", str(path), "--nolock", target,
         "--default-resources", "mem_mb=900", "runtime=20", "slurm_partition=debug",
         "--set-threads", "convert=2", "ingest=2", "synthesize=2", "train=2",
         "--set-resources", "train:mem_mb=1500", "convert:mem_mb=1500",
         "--slurm-init-seconds-before-status-checks", "1", "--jobs", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert Path(target).is_file()
    assert out.count("has been submitted with SLURM jobid") >= 5  # synthesize, ingest, convert, split, train
    # the train job was scheduled with one of the two (fake) GPUs
    jobs = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, env=env).stdout
    with_gpu = [line for line in jobs.splitlines() if "TresPerJob=gres:gpu:1" in line]
    assert len(with_gpu) == 1 and "rule_train" in with_gpu[0], jobs
