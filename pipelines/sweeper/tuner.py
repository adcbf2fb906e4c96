"""Ray Tune over Ray Train trials: Optuna TPE samples the space, ASHA stops weak trials at stage boundaries."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

from search_spaces import DefineByRun, as_dict, constants, grid_size, point_of
from slora.config import RESULTS_VERSION
from slora.configure import ConfigError, flat_config

from . import parent as parent_run
from . import tracking
from .options import SweepConfig, absolute_paths, grace_stages
from .preflight import prepare
from .resources import TrialResources, plan
from .state import SweepRun
from .summary import finish
from .trial import TrialSettings, trial_driver

S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "MLFLOW_S3_ENDPOINT_URL",
          "MLFLOW_S3_IGNORE_TLS")


def run_sweep(sweep: SweepConfig, run_overrides: dict, space_overrides: dict, log=print,
              shared_ray: bool = False) -> dict:
    """One sweep. shared_ray: Ray was started by the caller (start_ray), which runs several sweeps on it and shuts it
    down itself; a sweep on an existing cluster (address=) never shuts it down either."""
    started = time.perf_counter()
    run = plan_sweep(sweep, run_overrides, space_overrides)  # every input checked: nothing written yet
    open_tracking(run, log)
    log(f"Ray's own logs (workers, Train controllers, raylet): {start_ray(sweep.address)}")
    owns_ray = not (sweep.address or shared_ray)
    try:
        resources = find_resources(run.sweep, log)
        grid, resumed = fit(run, resources, log)
        if owns_ray:  # flushes the workers' forwarded logs, so the summary below is the last thing printed
            stop_ray()
        return report(run, grid, resources.concurrent, resumed, time.perf_counter() - started, log)
    finally:
        if owns_ray:
            stop_ray()


def plan_sweep(sweep: SweepConfig, run_overrides: dict, space_overrides: dict) -> SweepRun:
    """Name, paths, space and base config; a resumed sweep's recorded inputs checked against these. Before MLflow
    or Ray is touched."""
    cwd = Path.cwd()
    run_overrides = absolute_paths(run_overrides)
    base, params, num_stages = prepare(sweep, run_overrides, space_overrides)
    sweep = replace(sweep, num_samples=sweep.num_samples * grid_size(params))  # num_samples per grid point, as Tune
    name = sweep.name or f"sweep-{sweep.variant}-{base.data.benchmark}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = sweep.storage_path or str((cwd / "runs" / "ray").resolve())
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    if sweep.resume and not sweep.name:
        name = _latest_sweep(storage)
    out_dir = Path(sweep.out_dir or cwd / "runs" / name).resolve()
    state_file = out_dir / "sweep.json"
    previous = json.loads(state_file.read_text()) if sweep.resume and state_file.exists() else {}
    inputs = sweep_inputs(sweep, params, base, run_overrides)
    if previous and (changed := changed_inputs(previous, inputs)):
        raise ConfigError(f"sweep {name} in {out_dir} ran with other {changed}; resume it with the same command, or "
                          "start a new sweep (another name= and out_dir=)")
    uri = sweep.tracking_uri or tracking.default_tracking_uri(cwd)
    tracking.check_reachable(uri)
    if not (sweep.address or os.environ.get("RAY_ADDRESS")):
        _refuse_a_second_local_ray()
    return SweepRun(sweep, name, base, params, num_stages, run_overrides, storage, out_dir, inputs, previous,
                    tracking.TrackingTarget(uri, "", ""))


def open_tracking(run: SweepRun, log) -> None:
    """The experiment and the sweep's parent run (the resumed sweep's own), and sweep.json recording them."""
    sweep, uri = run.sweep, run.uri
    run.out_dir.mkdir(parents=True, exist_ok=True)
    artifact_root = (Path.cwd() / "mlartifacts") if uri.startswith("sqlite") else None
    experiment_id = tracking.prepare_experiment(uri, sweep.experiment, artifact_root)
    # the base config as trials ran it: the space's constants in, the searched keys (no trial used their base) out
    base_params = {k: v for k, v in {**flat_config(run.base), **constants(run.params)}.items()
                   if k not in run.searched}
    parent = tracking.start_parent(uri, experiment_id, run.name,
                                   {**{f"sweep.{k}": v for k, v in asdict(sweep).items()}, **base_params},
                                   run.previous.get("parent_run_id", ""),
                                   parent_run.start_description(run.name, sweep.variant, run.base.data.benchmark,
                                                                sweep.num_samples, run.num_stages, run.searched))
    run.target = tracking.TrackingTarget(uri, experiment_id, parent)
    # what it searches, over which base, so a resume (or compare.py reusing a finished sweep) can tell it is stale
    (run.out_dir / "sweep.json").write_text(json.dumps({"name": run.name, "storage_path": run.storage,
                                                       "parent_run_id": parent, **run.inputs}, default=str))
    log(f"sweep {run.name}: {sweep.num_samples} trials x {run.num_stages} stages, space {sweep.variant}; "
        f"MLflow {uri} (experiment {sweep.experiment}, parent run {parent})")


def find_resources(sweep: SweepConfig, log) -> TrialResources:
    import ray

    cluster = ray.cluster_resources()
    resources = plan(sweep, cluster.get("CPU", 1), cluster.get("GPU", 0))
    log(f"resources: {resources.describe(cluster.get('CPU', 1), cluster.get('GPU', 0), sweep.workers_per_trial)}")
    return resources


def fit(run: SweepRun, resources: TrialResources, log):
    """Tune over the trials (a new Tuner, or the interrupted one restored); -> (its ResultGrid, whether resumed)."""
    from ray import tune

    from .callback import TrialEndings

    sweep = run.sweep
    settings = TrialSettings(
        base_overrides=dict(run.run_overrides), constants=constants(run.params), tracking=run.target,
        storage_path=run.storage, workers_per_trial=sweep.workers_per_trial,
        cpus_per_worker=resources.cpus_per_worker, gpus_per_worker=resources.gpus_per_worker,
        max_failures=sweep.max_failures, save_merged=sweep.save_merged,
        kill_worker_at_stage=sweep.kill_worker_at_stage, seeds_per_trial=sweep.seeds_per_trial,
    )
    trainable = tune.with_resources(tune.with_parameters(trial_driver, settings=settings), {"cpu": 0.01})
    experiment_path = f"{run.storage.rstrip('/')}/{run.name}"
    if sweep.resume and tune.Tuner.can_restore(experiment_path):
        log(f"resuming {experiment_path}: finished trials are kept, unfinished ones continue")
        tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        return tuner.fit(), True
    tuner = tune.Tuner(
        trainable,
        tune_config=_tune_config(sweep, run.params, run.base, run.num_stages, resources.concurrent, log,
                                 run.inputs["first_trials"]),
        run_config=tune.RunConfig(name=run.name, storage_path=run.storage,
                                  # a trial driver lost with its node restarts; its trainer resumes
                                  failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                                  callbacks=[TrialEndings(run.target, run.num_stages)]),
    )
    return tuner.fit(), False


def report(run: SweepRun, grid, concurrent: int, resumed: bool, wall: float, log) -> dict:
    """The sweep's end (summary.finish), its timing, summary.json and the parent run's summary."""
    summary, table, run_statuses = finish(run, grid, log)
    summary["wall_seconds"] = wall
    training = summary.pop("training_seconds")
    if resumed:  # the trials' training spans every call of the sweep, the wall time only this one
        summary["platform_overhead_per_trial_seconds"] = None
        log(f"this call's wall time {wall:.0f}s, trials' own training over every call {training:.0f}s (a resumed "
            "sweep's platform overhead is not measured)")
    else:
        summary["platform_overhead_per_trial_seconds"] = overhead_per_trial(wall, training, summary["trials"],
                                                                            concurrent)
        log(f"sweep wall time {wall:.0f}s ({concurrent} trials at a time), trials' own training {training:.0f}s, "
            f"platform overhead per trial {summary['platform_overhead_per_trial_seconds']:.1f}s")
    (run.out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    parent_run.summarise_parent(run, table, run_statuses, summary)
    tracking.set_status(run.uri, run.target.parent_run_id, "FINISHED")
    return summary


def overhead_per_trial(wall: float, training: float, trials: int, concurrent: int) -> float:
    """Seconds of a trial slot not spent training, per trial: trials running side by side each fill a slot, so the
    wall time counts once per slot in use (wall minus training alone goes negative when trials overlap)."""
    slots = max(min(concurrent, trials), 1)
    return (wall * slots - training) / max(trials, 1)


def sweep_inputs(sweep: SweepConfig, params, base, run_overrides: dict) -> dict:
    """What a sweep searches: the space, the base overrides and the trials it runs before sampling (the preset's
    values under preset_first), as its sweep.json records them (JSON-normalised)."""
    point = point_of(params, flat_config(base)) if sweep.preset_first else {}
    first = [point] if point else []  # a space with nothing to sample (SimpleCIL's) has no first trial to give
    return json.loads(json.dumps({"space": as_dict(params), "run_overrides": run_overrides, "first_trials": first,
                                  "results_version": RESULTS_VERSION}, default=str))


def changed_inputs(recorded: dict, current: dict) -> str:
    """'' when a recorded sweep searched what `current` would, else what differs. A sweep.json written before these
    were recorded has neither, and is taken as it is."""
    changed = []
    if recorded.get("results_version", 2) != current["results_version"]:  # unrecorded: made before v3
        changed.append(f"code (results_version {recorded.get('results_version', 2)}, now {current['results_version']})")
    if "space" in recorded and recorded["space"] != current["space"]:
        keys = sorted(k for k in {*recorded["space"], *current["space"]}
                      if recorded["space"].get(k) != current["space"].get(k))
        changed.append(f"search space entries ({', '.join(keys)})")
    if "run_overrides" in recorded and recorded["run_overrides"] != current["run_overrides"]:
        old, new = recorded["run_overrides"], current["run_overrides"]
        keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
        changed.append(f"run settings ({', '.join(keys)})")
    if "first_trials" in recorded and recorded["first_trials"] != current["first_trials"]:
        changed.append(f"first trials ({recorded['first_trials']} against {current['first_trials']})")
    return " and ".join(changed)


def _tune_config(sweep, params, base, num_stages, concurrent, log, first: list[dict]):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    import optuna

    from .searcher import StageAwareOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" in every sweep

    fixed = {"variant": base.variant, "semantics": base.semantics}
    if sweep.objective == "pareto":
        metric, mode = ["val_accuracy", "stored_parameters"], ["max", "min"]
        if sweep.scheduler == "asha":
            log("objective=pareto: Optuna cannot prune multi-objective studies, so this sweep runs without ASHA")
        scheduler = None
    else:
        metric, mode = "val_accuracy", "max"
        scheduler = None if sweep.scheduler == "none" else ASHAScheduler(
            time_attr="stages_done", metric=f"val_{sweep.asha_metric}", mode="max", max_t=num_stages,
            grace_period=grace_stages(sweep.grace_period, num_stages), reduction_factor=sweep.reduction_factor,
            stop_last_trials=False,  # the default stops trials at their final report and leaks (docs/platform.md §5)
        )
    searcher = StageAwareOptunaSearch(space=DefineByRun(params, fixed), metric=metric, mode=mode,
                                      seed=sweep.search_seed,
                                      max_t=num_stages, points_to_evaluate=[dict(p) for p in first] or None)
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=sweep.num_samples,
                           max_concurrent_trials=concurrent)


def start_ray(address: str, **declared) -> str:
    """Start or join Ray (a no-op where this process already did); -> the folder its logs go to. ``declared``:
    resources a new local instance announces (num_gpus=2 makes logical GPUs for tests on a CPU machine)."""
    import ray

    # Stage reports are polled at this interval; the 2 s default would dominate tiny stages (docs/platform.md §4).
    env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
           "RAY_CHDIR_TO_TRIAL_DIR": "0", "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}
    os.environ.update({k: os.environ.get(k, v) for k, v in env.items()})
    # s3:// storage_path and MLflow artifacts on S3: the endpoint and region given to the driver reach every trial
    # (credentials come from the nodes: an instance profile on AWS, or the environment `ray start` ran in).
    # Inside a Ray Job the job's own env_vars already reach every worker, and naming one again is an error.
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
    env_vars = {k: os.environ[k] for k in (*env, *S3_ENV) if k in os.environ and k not in job.get("env_vars", {})}
    # "local": always a fresh instance; a bare ray.init() would join any cluster `ray start` left on this machine.
    # A Ray Job (`ray job submit`, README "On a GPU cluster") names its own cluster in RAY_ADDRESS.
    address = address or os.environ.get("RAY_ADDRESS", "")
    # The console is Tune's progress table and this project's lines. Ray's start-up chatter (token authentication,
    # worker start-up concurrency, actor constructor size, each Train controller's resource requests: all benign,
    # docs/platform.md §10) stays in the session's log folder, where a failed trial's error file also points.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # with the dashboard: its State API lets Ray free stopped trials' workers
    context = ray.init(address=address or "local",
                       runtime_env={"env_vars": env_vars}, log_to_driver=False, logging_level=logging.WARNING,
                       ignore_reinit_error=True, **declared)
    if not address:
        _record_local_address(context.address_info["gcs_address"])
    return str(Path(context.address_info.get("session_dir", "/tmp/ray/session_latest")) / "logs")


def stop_ray() -> None:
    """Shut down this process's Ray. An instance it started (start_ray without an address) takes its record in the
    machine's address file with it, as `ray stop` does; a cluster it joined lives on, and so does its record."""
    import ray
    from ray._common.utils import reset_ray_address
    from ray._private import worker
    from ray._private.utils import read_ray_address

    if not ray.is_initialized():
        return
    started_here = worker._global_node is not None and worker._global_node.is_head()  # joined: a connect-only node
    ours = ray.get_runtime_context().gcs_address
    ray.shutdown()
    if started_here and read_ray_address() == ours:
        reset_ray_address()


def _record_local_address(gcs_address: str) -> None:
    """Name the instance just started in the machine's Ray address file (/tmp/ray/ray_current_cluster), as `ray start`
    does. Ray Train's PlacementGroupCleaner finds "its" cluster through that file: one left by a cluster that is gone
    (a Slurm job's `ray start --head`, killed with the job, never removes it) makes the cleaner time out and die, so
    every trial ASHA stops keeps its CPUs and the sweep waits forever (seen: 4 stopped trials held 1.96 of 2 CPUs).
    No other instance runs here (_refuse_a_second_local_ray), so whatever the file named is not this sweep's."""
    from ray._private.utils import write_ray_address

    write_ray_address(gcs_address)


def _refuse_a_second_local_ray() -> None:
    """A second local Ray instance on this machine breaks the first's and its own stopped-trial cleanup: Ray Train's
    PlacementGroupCleaner finds two instances, cannot tell which is its own, and dies, so every trial ASHA stops
    keeps its CPUs and the sweep waits forever for them (docs/platform.md §5)."""
    import ray
    from ray._private.services import find_gcs_addresses  # how the cleaner itself finds "the" instance

    if ray.is_initialized():  # this process's own instance (pipelines/compare.py runs its sweeps on one)
        return
    running = find_gcs_addresses()
    if running:
        raise ConfigError(f"another Ray instance is running on this machine ({', '.join(sorted(running))}); two local "
                          "instances leak stopped trials' CPUs and hang. Wait for it or `ray stop` it, or share one: "
                          "`ray start --head` once, then address=auto for every sweep")


def _latest_sweep(storage: str) -> str:
    folders = sorted((p for p in Path(storage).glob("sweep-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not folders:
        raise ConfigError(f"resume=true: no sweep under storage_path={storage}; give name= of the sweep to resume")
    return folders[-1].name
