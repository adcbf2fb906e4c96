"""Sweeps on a real multi-node Ray cluster on this machine, everything on 127.0.0.1.

One module-wide environment: an S3-compatible server (moto), an `mlflow server` whose artifacts go to S3, and a
Ray cluster of a 0-CPU head (dashboard + Jobs API) and two 1-CPU worker nodes (ray.cluster_utils.Cluster: separate
raylets, GCS and dashboard processes). Ray's temp dir is private to this module (RAY_TMPDIR), so no other Ray
instance on the machine sees it, and RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps every Ray address on loopback.
The nodes get S3 credentials in their environment (as an instance profile gives them on AWS); the S3 endpoint
reaches the trials from the sweep driver (pipelines/sweeper/tuner.py `start_ray`).

1. a sweep submitted through the Ray Jobs API, storage_path=s3://: trials on both worker nodes, checkpoints and
   MLflow artifacts in the bucket, runs in the MLflow server;
2. a worker node killed (SIGKILL of all its processes) mid-trial: the trial resumes from its last stage on another
   node and ends with the same metrics as an identical trial that was not disturbed;
3. the sweep driver SIGKILLed mid-sweep, then `resume=true name=...`: the finished trial is not run again.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "slora-cluster-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
SMALL = ["variant=slora", "max_train_per_class=20", "max_test_per_class=10", "scheduler=none"]
# Every searched parameter fixed: all trials of a sweep are the same run, so a disturbed one can be compared.
FIXED = ["space.adapter.rank=4", "space.optim.optimizer=sgd", "space.optim.lr_head=0.01",
         "space.optim.lr_magnitude=0.01", "space.optim.lr_direction=0.003",
         "space.adapter.magnitude_init=0.8", "space.adapter.normaliser=factor_norms",
         "space.adapter.carry_magnitudes=false"]
FINAL_METRICS = ("test_accuracy", "test_forgetting", "test_average_incremental_accuracy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group the test started, then SIGKILL what is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


# -- the environment ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._port}"
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")


def s3_keys(endpoint: str, prefix: str) -> list[str]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="module")
def workdir():
    # Short: Ray's unix socket paths live under RAY_TMPDIR and must stay under 108 characters.
    folder = Path(tempfile.mkdtemp(prefix="slc-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(workdir, s3_endpoint):
    port = free_port()
    env = {**os.environ, **CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    log = open(workdir / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
         "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
         "--default-artifact-root", f"s3://{BUCKET}/mlflow"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        def healthy():
            assert proc.poll() is None, (workdir / "mlflow-server.log").read_text()[-3000:]
            try:
                return urllib.request.urlopen(f"{uri}/health", timeout=2).read()
            except OSError:
                return None

        wait_for(healthy, 180, "the MLflow server")
        yield uri
    finally:
        stop_process_group(proc)
        log.close()


@pytest.fixture(scope="module")
def cluster(workdir, mlflow_server):
    """Head (0 CPU, dashboard, Jobs API) + two 1-CPU worker nodes; torn down (SIGKILL if need be) at the end."""
    from ray.cluster_utils import Cluster

    saved = dict(os.environ)
    os.environ.update({"RAY_TMPDIR": str(workdir), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **CREDENTIALS})
    clusters = []
    try:
        for attempt in range(2):  # a loaded 2-core machine sometimes misses the node start-up deadline once
            dashboard_port = free_port()
            try:
                clusters.append(Cluster(initialize_head=True, shutdown_at_exit=False, head_node_args=dict(
                    num_cpus=0, node_ip_address="127.0.0.1", gcs_server_port=free_port(), include_dashboard=True,
                    dashboard_host="127.0.0.1", dashboard_port=dashboard_port,
                    dashboard_agent_listen_port=free_port(),
                    _system_config={"health_check_period_ms": 1000, "health_check_failure_threshold": 3})))
                break
            except Exception:
                if attempt:
                    raise
        c = clusters[-1]
        c.dashboard_url = f"http://127.0.0.1:{dashboard_port}"
        for _ in range(2):
            add_worker_node(c)
        yield c
    finally:
        for c in clusters:
            try:
                c.shutdown()
            except Exception:
                pass
            for node in [c.head_node, *c.worker_nodes]:
                if node is not None:
                    node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
        os.environ.clear()
        os.environ.update(saved)


def add_worker_node(cluster):
    # Its own temp dir, as on a machine of its own: nodes sharing one session dir share runtime_resources/, and one
    # node's runtime-env agent then deletes the job's working_dir under the sweep driver (FileNotFoundError at cwd).
    cluster.added = getattr(cluster, "added", 0) + 1
    temp_dir = Path(os.environ["RAY_TMPDIR"]) / f"n{cluster.added}"
    return cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=150 * 1024 * 1024,
                            temp_dir=str(temp_dir))


# -- helpers ------------------------------------------------------------------------------------------------------
def mlflow_client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def children(uri: str, experiment: str) -> list:
    client = mlflow_client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], max_results=100)
    return sorted((r for r in runs if r.data.tags.get("slora.kind") == "trial"), key=lambda r: r.info.start_time)


def stages_logged(uri: str, run_id: str) -> list[int]:
    return [m.step for m in mlflow_client(uri).get_metric_history(run_id, "stage_seconds")]


def final_metrics(uri: str, run_id: str) -> dict:
    client = mlflow_client(uri)
    return {k: client.get_metric_history(run_id, k)[-1].value for k in FINAL_METRICS}


def sweep_process(args: list[str], cwd: Path, s3_endpoint: str) -> subprocess.Popen:
    """The sweep driver as its own process group, connected to the cluster; the S3 endpoint only in its env."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ENDPOINT_URL": s3_endpoint,
           "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    log = open(cwd / "sweep.log", "a")
    return subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "sweep.py"), *args], cwd=cwd, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, cwd: Path, timeout: float) -> str:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        stop_process_group(proc)
    output = (cwd / "sweep.log").read_text()
    assert proc.returncode == 0, output[-5000:]
    return output


def worker_node_ids(cluster) -> set[str]:
    return {n.node_id for n in cluster.worker_nodes}


# -- 1. a job on the cluster, storage on S3 ----------------------------------------------------------------------
def test_job_sweep_spreads_over_nodes_with_s3_storage(cluster, mlflow_server, s3_endpoint, workdir):
    from ray.job_submission import JobStatus, JobSubmissionClient

    out_dir = workdir / "job-out"
    jobs = JobSubmissionClient(cluster.dashboard_url)
    job = jobs.submit_job(
        entrypoint=f"{sys.executable} pipelines/sweep.py name=job-sweep experiment=cluster-job num_samples=2 "
                   f"num_tasks=2 space.optim.epochs=1 cpus_per_worker=0.9 storage_path=s3://{BUCKET}/ray "
                   f"tracking_uri={mlflow_server} out_dir={out_dir} " + " ".join(SMALL),
        # what `ray job submit --working-dir .` uploads (README); the endpoint stands in for AWS's own
        runtime_env={"working_dir": str(ROOT), "excludes": [".venv", ".git", "runs", "*.db", "mlartifacts"],
                     "env_vars": {"AWS_ENDPOINT_URL": s3_endpoint, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}},
    )
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    try:
        status = wait_for(lambda: (s := jobs.get_job_status(job)) in terminal and s, 480, "the job", interval=2)
    finally:
        if jobs.get_job_status(job) not in terminal:
            jobs.stop_job(job)
    logs = jobs.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-5000:]

    runs = children(mlflow_server, "cluster-job")
    assert len(runs) == 2
    nodes = {r.data.tags["ray_node_id"] for r in runs}
    assert len(nodes) == 2 and nodes <= worker_node_ids(cluster), "the two trials ran on the two worker nodes"
    assert all(r.info.artifact_uri.startswith(f"s3://{BUCKET}/mlflow/") for r in runs)
    assert all(stages_logged(mlflow_server, r.info.run_id) == [1, 2] for r in runs)
    assert all(r.info.status == "FINISHED" for r in runs)

    keys = s3_keys(s3_endpoint, "")
    for run in runs:  # MLflow artifacts, uploaded by rank 0 on a worker node straight to S3
        prefix = run.info.artifact_uri.removeprefix(f"s3://{BUCKET}/")
        assert f"{prefix}/accuracy_matrix.png" in keys
    for run in runs:  # Ray Train's per-stage checkpoints (num_to_keep=2 keeps both stages)
        trial_id = run.data.tags["ray_trial_id"]
        for stage in (1, 2):
            assert f"ray/train-{trial_id}/stage_{stage:02d}/checkpoint.safetensors" in keys, keys
    assert any(k.startswith("ray/job-sweep/") for k in keys), "Tune's experiment state is in the bucket"
    version = mlflow_client(mlflow_server).get_model_version_by_alias("slora-best", "champion")
    assert version.source.startswith(f"s3://{BUCKET}/mlflow/")
    assert (out_dir / "results.parquet").exists()


# -- 2. a worker node lost mid-trial -----------------------------------------------------------------------------
def test_lost_node_trial_resumes_on_another_node(cluster, mlflow_server, s3_endpoint, workdir, capsys):
    cwd = workdir / "node-kill"
    cwd.mkdir()
    stages = 5
    proc = sweep_process([*SMALL, *FIXED, "space.optim.epochs=3", f"num_tasks={stages}", "num_samples=2",
                          "cpus_per_worker=0.9", "name=node-kill", "experiment=cluster-node-kill",
                          f"storage_path={cwd / 'shared'}", f"tracking_uri={mlflow_server}",
                          f"address={cluster.address}"], cwd, s3_endpoint)
    try:
        def a_trial_past_stage_two():  # stage 1 committed (stage 2 starts after the commit), the last one not yet
            runs = children(mlflow_server, "cluster-node-kill")
            return next((r for r in runs if "ray_node_id" in r.data.tags
                         and 2 <= len(stages_logged(mlflow_server, r.info.run_id)) < stages), None)

        victim = wait_for(a_trial_past_stage_two, 300, "a trial to finish stage 2", interval=0.25)
        node_id = victim.data.tags["ray_node_id"]
        done_before = max(stages_logged(mlflow_server, victim.info.run_id))
        (node,) = [n for n in cluster.worker_nodes if n.node_id == node_id]
        cluster.remove_node(node, allow_graceful=False)  # SIGKILL of the raylet and everything on the node
        add_worker_node(cluster)  # the autoscaler's replacement
        output = finish(proc, cwd, 480)
    finally:
        stop_process_group(proc)

    after = mlflow_client(mlflow_server).get_run(victim.info.run_id)
    history = stages_logged(mlflow_server, victim.info.run_id)
    other = [r for r in children(mlflow_server, "cluster-node-kill") if r.info.run_id != victim.info.run_id][0]
    assert after.data.tags["ray_node_id"] != node_id, "the trial resumed on another node"
    assert sorted(set(history)) == list(range(1, stages + 1)) and after.data.tags["slora.status"] == "finished"
    retrained = len(history) - stages
    assert retrained <= 1, f"stages {history}: only the stage in progress may run again"
    assert all(history.count(s) == 1 for s in range(1, done_before)), f"stages {history}: a committed stage re-ran"
    assert final_metrics(mlflow_server, victim.info.run_id) == final_metrics(mlflow_server, other.info.run_id)
    with capsys.disabled():
        print(f"\n[node kill] killed node after stage {done_before}/{stages}; stage history {history}; "
              f"stages retrained {retrained}; final {final_metrics(mlflow_server, victim.info.run_id)} "
              f"== undisturbed trial's")
    assert "best finished trial" in output


# -- 3. the sweep driver killed, then resumed ---------------------------------------------------------------------
def test_killed_sweep_driver_resumes_without_rerunning_finished_trials(cluster, mlflow_server, s3_endpoint, workdir,
                                                                       capsys):
    cwd = workdir / "driver-kill"
    cwd.mkdir()
    stages = 5
    common = [*SMALL, *FIXED, "space.optim.epochs=3", f"num_tasks={stages}", "num_samples=2",
              "max_concurrent_trials=1", "name=driver-kill", "experiment=cluster-driver-kill",
              f"storage_path=s3://{BUCKET}/ray", f"tracking_uri={mlflow_server}", f"address={cluster.address}"]
    first = sweep_process(common, cwd, s3_endpoint)
    try:
        def second_trial_past_stage_two():
            runs = children(mlflow_server, "cluster-driver-kill")
            return len(runs) == 2 and 2 <= len(stages_logged(mlflow_server, runs[1].info.run_id)) < stages and runs

        runs = wait_for(second_trial_past_stage_two, 300, "the second trial's second stage", interval=0.25)
        os.killpg(first.pid, signal.SIGKILL)  # the driver and nothing else: the cluster stays up
        first.wait(30)
    finally:
        stop_process_group(first)
    done_at_kill = max(stages_logged(mlflow_server, runs[1].info.run_id))
    assert stages_logged(mlflow_server, runs[0].info.run_id) == list(range(1, stages + 1))

    resumed = sweep_process([*common, "resume=true"], cwd, s3_endpoint)
    try:
        output = finish(resumed, cwd, 480)
    finally:
        stop_process_group(resumed)
    assert "resuming s3://" in output
    after = children(mlflow_server, "cluster-driver-kill")
    assert [r.info.run_id for r in after] == [r.info.run_id for r in runs], "no new trial, no new MLflow run"
    first_history = stages_logged(mlflow_server, runs[0].info.run_id)
    second_history = stages_logged(mlflow_server, runs[1].info.run_id)
    assert first_history == list(range(1, stages + 1)), "the finished trial was not run again"
    assert sorted(set(second_history)) == list(range(1, stages + 1))
    retrained = len(second_history) - stages
    assert retrained <= 1, f"stages {second_history}: only the stage in progress may run again"
    assert all(second_history.count(s) == 1 for s in range(1, done_at_kill)), f"stages {second_history}"
    assert final_metrics(mlflow_server, runs[0].info.run_id) == final_metrics(mlflow_server, runs[1].info.run_id)
    with capsys.disabled():
        print(f"\n[driver kill] killed the sweep after trial 2's stage {done_at_kill}/{stages}; trial 1 stages "
              f"{first_history}; trial 2 stages {second_history}; stages retrained {retrained}; final metrics equal")
