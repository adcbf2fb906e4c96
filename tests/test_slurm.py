"""slurm/sweep.sbatch on a real single-node Slurm (Debian's slurm-wlm and munge, started here, as root): a 2-trial
sweep submitted with sbatch leaves its MLflow store and Parquet table on the shared storage.

.ci/run installs the packages; the test skips, naming why, only where they are not installed and cannot be (no
root, no apt). Every other failure to start Slurm fails the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from test_sweep import SMALL
from tiny import PYTHON, ROOT

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def slurm_installed() -> bool:
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS):
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("slurm-wlm and munge are not installed and cannot be here (no root or no apt-get); "
                    ".ci/run installs them")
    installed = subprocess.run(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], capture_output=True,
                               text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=600)
    if installed.returncode != 0:
        pytest.skip(f"apt-get could not install slurm-wlm and munge: {installed.stderr.strip()[-300:]}")
    return True


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """munged, slurmctld and slurmd for this machine as one node, on a private socket, ports and state folder."""
    slurm_installed()
    if os.geteuid() != 0:
        pytest.skip("slurmd launches jobs as their user, so a test cluster needs root")
    root = tmp_path_factory.mktemp("slurm")
    (root / "state").mkdir()
    (root / "spool").mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    subprocess.run(["munged", "--force", f"--socket={root / 'munge.sock'}", f"--key-file={key}",
                    f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}",
                    f"--seed-file={root / 'munged.seed'}"], check=True)
    host = socket.gethostname()
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=slora", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}", "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={root / 'munge.sock'}", f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}", f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}", f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "ReturnToService=2", "MpiDefault=none", f"NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
    subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
    try:
        deadline = time.time() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                           env=env).stdout:
            assert time.time() < deadline, \
                "Slurm's node never became idle: " + (root / "slurmd.log").read_text()[-2000:]
            time.sleep(1)
        yield env, root
    finally:
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            if (root / pid_file).exists():
                subprocess.run(["kill", (root / pid_file).read_text().strip()], check=False)


@pytest.mark.slow
def test_sbatch_runs_a_two_trial_sweep_on_a_ray_cluster_it_starts(slurm, tmp_path):
    env, root = slurm
    shared = tmp_path / "shared"
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--nodes=1", f"--output={tmp_path / 'job.out'}", "slurm/sweep.sbatch",
         "variant=slora", "num_samples=2", "num_tasks=2", *SMALL[1:], "scheduler=none", "name=slurm",
         f"out_dir={shared / 'slurm'}", "save_merged=none"],
        cwd=ROOT, env={**env, "SLORA_SHARED": str(shared), "SLORA_PYTHON": PYTHON}, capture_output=True, text=True,
        check=True)
    job = submitted.stdout.strip().split(";")[0]
    deadline, state = time.time() + 600, ""
    while time.time() < deadline:
        state = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=env).stdout
        if any(f"JobState={s}" in state for s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")):
            break
        time.sleep(2)
    log = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert "JobState=COMPLETED" in state, state[-1500:] + log[-3000:]
    assert "Ray head on" in log
    table = pq.read_table(shared / "slurm" / "results.parquet").to_pandas()
    assert table["trial"].nunique() == 2 and set(table["stage"]) == {1, 2} and (table["status"] == "finished").all()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{shared / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("slora-sweep").experiment_id])
    assert sorted(r.data.tags.get("slora.kind") for r in runs) == ["sweep", "trial", "trial"]
    assert (shared / "ray" / "slurm").is_dir(), "Ray's results on the shared storage"
