"""The sweep: parse, validate, then Ray Tune (Optuna TPE + ASHA by stage) over Ray Train trials, MLflow, Parquet.

Keys that are SweepConfig fields configure the sweep; ``space.KEY=...`` overrides the search space; every other
key is a RunConfig override applied to each trial (benchmark=, data_root=, backbone=, epochs=, ...).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

from search_spaces import DefineByRun, available_spaces, constants, load_space
from slora.config import SWEEP_VAL_FRACTION, RunConfig
from slora.overrides import (ConfigError, build_config, describe_keys, field_paths, flat_config, parse_value,
                             resolve_key, run_keys_help, split_overrides)
from slora.report import format_table, stage_table
from slora.runner import start_run
from slora.variants import get_variant

from . import tracking
from .results import VARIANT_COLUMNS, best_per_variant, pareto_front, results_table, write_table
from .trial import TrialSettings, trial_driver

SPACE_PREFIX = "space."
S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "MLFLOW_S3_ENDPOINT_URL",
          "MLFLOW_S3_IGNORE_TLS")


@dataclass
class SweepConfig:
    variant: str = "slora"  # a variant's search space, or `all` (the variant itself searched)
    num_samples: int = 6
    max_concurrent_trials: int = 0  # 0: as many as the cluster's CPUs fit
    workers_per_trial: int = 1
    # Fractional by default: on a 2-core laptop two single-worker trials then run side by side, and trial
    # drivers (0.01 CPU each) can never starve the workers (docs/platform.md §3).
    cpus_per_worker: float = 0.49
    gpus_per_worker: float = 0.0  # fractions allowed (small models share a GPU)
    # Every selection reads the validation split (data.val_fraction, SWEEP_VAL_FRACTION unless set): the
    # objective, ASHA's ranking, the best trial, the registered model and the Pareto front.
    objective: Literal["accuracy", "pareto"] = "accuracy"  # val_accuracy; pareto: also min stored parameters
    scheduler: Literal["asha", "none"] = "asha"
    grace_period: int = 1  # stages every trial gets before ASHA may stop it
    # ASHA ranks trials at a rung by average incremental accuracy, not the current stage's accuracy: accuracy
    # after the first stages is inflated (few classes, near 100% on digits' 2-class stage 1) and barely ranks
    # trials. Replaying a measured 8-trial sweep (`bench_asha.py replay=`): keeping 1/3 per rung kept the
    # no-early-stopping winner in 97% of trial orders (1/2 kept: 66%; current-stage accuracy, 1/2 kept: 23%), all
    # at about 40% fewer stage-epochs.
    asha_metric: Literal["average_incremental_accuracy", "accuracy"] = "average_incremental_accuracy"  # val_
    reduction_factor: int = 3
    # Each trial runs its config on this many seeds (seed s: training seed + s, class order seed + s), stage by
    # stage together, and reports their mean (and std): K times the training of a trial, one start-up.
    seeds_per_trial: int = 1
    seed: int = 0  # TPE's seed
    name: str = ""  # '' : sweep-<variant>-<benchmark>-<time>
    storage_path: str = ""  # '' : <cwd>/runs/ray; any pyarrow URI (s3://...) for a cluster
    tracking_uri: str = ""  # '' : sqlite file <cwd>/mlflow.db
    experiment: str = "slora-sweep"
    registered_model: str = "slora-best"
    out_dir: str = ""  # '' : <cwd>/runs/<name>
    address: str = ""  # an existing Ray cluster ('auto' or ray://...); '' starts a local one
    resume: bool = False
    save_merged: Literal["every", "last", "none"] = "last"
    max_failures: int = 1  # Train restarts per trial after a lost worker
    kill_worker_at_stage: int = 0  # fault drill for tests: SIGKILL rank 0 once at this stage


def parse_sweep_args(argv: list[str]) -> tuple[SweepConfig, dict, dict]:
    """-> (sweep config, run overrides for every trial, search-space overrides). Errors before Ray starts."""
    pairs = split_overrides(argv)
    sweep = SweepConfig()
    names = {f.name: f for f in fields(SweepConfig)}
    import typing

    hints = typing.get_type_hints(SweepConfig)
    run_overrides, space_overrides = {}, {}
    for key, value in pairs.items():
        if key.startswith(SPACE_PREFIX):
            space_overrides[key[len(SPACE_PREFIX):]] = value
        elif key in names:
            setattr(sweep, key, parse_value(key, value, hints[key]))
        else:
            run_overrides[key] = value
    if sweep.variant != "all":
        try:
            get_variant(sweep.variant)
        except ValueError as err:
            raise ConfigError(f"{err}, all") from None
        run_overrides["variant"] = sweep.variant
    val_key = next((k for k in run_overrides if resolve_key(k, field_paths(RunConfig)) == "data.val_fraction"), None)
    if val_key is None:
        run_overrides["data.val_fraction"] = str(SWEEP_VAL_FRACTION)
    elif parse_value("data.val_fraction", run_overrides[val_key], float) <= 0:
        raise ConfigError(f"{val_key}={run_overrides[val_key]}: a sweep selects on a validation split, so it must "
                          f"be in (0, 1) (default {SWEEP_VAL_FRACTION}); never on test data")
    for key in ("num_samples", "workers_per_trial", "reduction_factor", "grace_period", "seeds_per_trial"):
        if getattr(sweep, key) < 1:
            raise ConfigError(f"{key}={getattr(sweep, key)}: must be >= 1")
    if sweep.cpus_per_worker <= 0 or sweep.gpus_per_worker < 0:
        raise ConfigError(f"cpus_per_worker={sweep.cpus_per_worker} must be > 0 and gpus_per_worker >= 0")
    return sweep, run_overrides, space_overrides


def sweep_help() -> str:
    return ("Sweep keys:\n" + describe_keys(SweepConfig())
            + f"\n\nSearch spaces (variant=): {', '.join(available_spaces())} (search_spaces/*.yaml); "
            "space.KEY=[a,b] replaces a parameter's choices, space.KEY=x fixes it.\n\n"
            f"Every other key is a run override for every trial; a sweep sets data.val_fraction={SWEEP_VAL_FRACTION} "
            "unless given (selection reads val_ scores only). " + run_keys_help())


def prepare(sweep: SweepConfig, run_overrides: dict, space_overrides: dict):
    """Everything checkable before Ray: the base config, the space (every choice parses), the data and the
    backbone's weights (a missing dataset or unreachable hub fails here once, not in every trial)."""
    base = build_config(dict(run_overrides))
    params = load_space(sweep.variant, space_overrides)
    for p in params:  # each fixed value and first choice must make a valid trial config
        if p.kind in ("choice", "value"):
            first = p.args[0] if p.kind == "choice" else p.args
            build_config({**run_overrides, p.key: first})
    stages = start_run(replace(base, device="cpu")).num_stages  # joint: one stage
    return base, params, stages


# Local files a trial reads. Made absolute in the sweep's own process: a Ray Job's trials run in its uploaded
# working directory, and a relative path there points somewhere else.
LOCAL_PATH_FIELDS = ("backbone.checkpoint", "data.data_root", "data.cache_dir")


def absolute_paths(run_overrides: dict) -> dict:
    paths = field_paths(RunConfig)
    out = dict(run_overrides)
    for key, value in run_overrides.items():
        remote = "://" in value or value.startswith("hf-hub:")
        if resolve_key(key, paths) not in LOCAL_PATH_FIELDS or not value or remote:
            continue
        prefix = "local-dir:" if value.startswith("local-dir:") else ""
        out[key] = prefix + str(Path(value.removeprefix(prefix)).expanduser().resolve())
    return out


def concurrent_trials(sweep: SweepConfig, cluster_cpus: float) -> int:
    """Trials that fit at once; each worker runs one torch thread per whole CPU, so count real cores."""
    if sweep.max_concurrent_trials:
        return sweep.max_concurrent_trials
    per_trial = sweep.workers_per_trial * max(sweep.cpus_per_worker, 1.0)  # drivers take 0.01 CPU
    return max(1, int(cluster_cpus // per_trial))


def run_sweep(sweep: SweepConfig, run_overrides: dict, space_overrides: dict, log=print) -> dict:
    cwd = Path.cwd()
    started = time.perf_counter()
    run_overrides = absolute_paths(run_overrides)
    base, params, num_stages = prepare(sweep, run_overrides, space_overrides)
    name = sweep.name or f"sweep-{sweep.variant}-{base.data.benchmark}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = sweep.storage_path or str((cwd / "runs" / "ray").resolve())
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    if sweep.resume and not sweep.name:
        name = _latest_sweep(storage)
    out_dir = Path(sweep.out_dir or cwd / "runs" / name).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    uri = sweep.tracking_uri or tracking.default_tracking_uri(cwd)
    tracking.check_reachable(uri)
    artifact_root = (cwd / "mlartifacts") if uri.startswith("sqlite") else None
    experiment_id = tracking.prepare_experiment(uri, sweep.experiment, artifact_root)
    state_file = out_dir / "sweep.json"
    previous = json.loads(state_file.read_text()) if sweep.resume and state_file.exists() else {}
    parent = tracking.start_parent(uri, experiment_id, name,
                                   {**{f"sweep.{k}": v for k, v in asdict(sweep).items()}, **flat_config(base)},
                                   previous.get("parent_run_id", ""))
    state_file.write_text(json.dumps({"name": name, "storage_path": storage, "parent_run_id": parent}))
    log(f"sweep {name}: {sweep.num_samples} trials x {num_stages} stages, space {sweep.variant}; "
        f"MLflow {uri} (experiment {sweep.experiment}, parent run {parent})")

    import ray
    from ray import tune

    _init_ray(sweep.address)
    try:
        concurrent = concurrent_trials(sweep, ray.cluster_resources().get("CPU", 1))
        settings = TrialSettings(
            base_overrides=dict(run_overrides), constants=constants(params),
            tracking=tracking.TrackingTarget(uri, experiment_id, parent), storage_path=storage,
            workers_per_trial=sweep.workers_per_trial, cpus_per_worker=sweep.cpus_per_worker,
            gpus_per_worker=sweep.gpus_per_worker, max_failures=sweep.max_failures,
            save_merged=sweep.save_merged, kill_worker_at_stage=sweep.kill_worker_at_stage,
            seeds_per_trial=sweep.seeds_per_trial,
        )
        trainable = tune.with_resources(tune.with_parameters(trial_driver, settings=settings), {"cpu": 0.01})
        experiment_path = f"{storage.rstrip('/')}/{name}"
        if sweep.resume and tune.Tuner.can_restore(experiment_path):
            log(f"resuming {experiment_path}: finished trials are kept, unfinished ones continue")
            tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=_tune_config(sweep, params, base, num_stages, concurrent, log),
                run_config=tune.RunConfig(name=name, storage_path=storage,
                                          # a trial driver lost with its node restarts; its trainer resumes
                                          failure_config=tune.FailureConfig(max_failures=sweep.max_failures)),
            )
        grid = tuner.fit()
        if not sweep.address:  # flushes the workers' forwarded logs, so the summary below is the last thing printed
            ray.shutdown()
        summary = _finish(sweep, grid, params, uri, experiment_id, parent, num_stages, out_dir, log)
        summary["wall_seconds"] = time.perf_counter() - started
        training = summary.pop("training_seconds")
        summary["platform_overhead_per_trial_seconds"] = (summary["wall_seconds"] - training) / max(summary["trials"], 1)
        log(f"sweep wall time {summary['wall_seconds']:.0f}s, trials' own training {training:.0f}s, platform "
            f"overhead per trial {summary['platform_overhead_per_trial_seconds']:.1f}s")
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        return summary
    finally:
        if not sweep.address:
            ray.shutdown()


def _tune_config(sweep, params, base, num_stages, concurrent, log):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from .searcher import StageAwareOptunaSearch

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
            grace_period=min(sweep.grace_period, num_stages), reduction_factor=sweep.reduction_factor,
            stop_last_trials=False,  # the default stops trials at their final report and leaks (docs/platform.md §5)
        )
    searcher = StageAwareOptunaSearch(
        space=DefineByRun(params, fixed), metric=metric, mode=mode, seed=sweep.seed, max_t=num_stages
    )
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=sweep.num_samples,
                           max_concurrent_trials=concurrent)


def _init_ray(address: str) -> None:
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
    ray.init(address=address or "local",  # with the dashboard: its State API lets Ray free stopped trials' workers
             runtime_env={"env_vars": env_vars}, log_to_driver=True,
             ignore_reinit_error=True)


def _latest_sweep(storage: str) -> str:
    folders = sorted((p for p in Path(storage).glob("sweep-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not folders:
        raise ConfigError(f"resume=true: no sweep under storage_path={storage}; give name= of the sweep to resume")
    return folders[-1].name


def _score(row: dict, key: str) -> str:
    """A mean score, with its spread over the trial's seeds when it ran several."""
    spread = row.get(f"{key}_std")
    return f"{row[key]:.2%}" + (f" ± {spread:.2%}" if spread is not None and spread == spread else "")


def _finish(sweep, grid, params, uri, experiment_id, parent, num_stages, out_dir, log) -> dict:
    """Statuses, the results table, the best finished trial, the registered model, the MLflow UI command."""
    statuses = {}
    for result in grid:
        metrics = result.metrics or {}
        if "trial_id" not in metrics:  # Tune adds it to every result; a trial that never reported has none
            continue
        if result.error:
            statuses[metrics["trial_id"]] = "failed"
        elif "stages_done" in metrics:  # else no report reached Tune: results_table judges by MLflow's stages
            statuses[metrics["trial_id"]] = "finished" if metrics["stages_done"] >= num_stages else "pruned"
    table, run_statuses = results_table(uri, experiment_id, parent, num_stages, statuses)
    for run_id, status in run_statuses.items():
        mlflow_status = {"finished": "FINISHED", "failed": "FAILED"}.get(status, "KILLED")
        tracking.set_status(uri, run_id, mlflow_status, {"slora.status": status})
    files = write_table(table, out_dir)
    finished = [r for r in table if r["status"] == "finished" and r["stage"] == num_stages]
    summary = {"out_dir": str(out_dir), "trials": len(run_statuses), "finished": len(finished),
               "results": str(files[0]), "tracking_uri": uri, "parent_run_id": parent,
               "training_seconds": sum(r.get("stage_seconds", 0.0) for r in table),
               "stage_epochs": sum(int(r.get("optim.epochs", 0)) for r in table)}
    if finished:
        best = max(finished, key=lambda r: r["val_accuracy"])  # selected on validation, reported on test
        summary["best"] = {k: v for k, v in best.items()}
        log(f"\nbest finished trial {best['trial']} (MLflow run {best['run_id']}), selected on validation: "
            f"val accuracy {_score(best, 'val_accuracy')}; its test accuracy {_score(best, 'test_accuracy')}, "
            f"test AAA {_score(best, 'test_average_incremental_accuracy')}, "
            f"test forgetting {_score(best, 'test_forgetting')}")
        searched = [p.key for p in params if p.kind != "value" and p.applies_to(best)]
        if "variant" not in searched:  # fixed by the variant's own space, still worth naming
            searched.append("variant")
        log("config: " + ", ".join(f"{k}={best[k]}" for k in searched if k in best))
        log(stage_table([r for r in table if r["run_id"] == best["run_id"]]))
        if sweep.save_merged != "none":
            version = tracking.register_best(uri, best["run_id"], num_stages, sweep.registered_model)
            summary["registered_model"] = f"models:/{sweep.registered_model}/{version}"
            log(f"registered {summary['registered_model']} (alias champion)")
        if sweep.objective == "pareto":
            front = pareto_front(finished)
            summary["pareto_front"] = front
            log("\nPareto front (max val accuracy, min stored parameters; test accuracy alongside):")
            for r in front:
                log(f"  {r['trial']}: val accuracy {r['val_accuracy']:.2%}, test accuracy {r['test_accuracy']:.2%}, "
                    f"stored parameters {int(r['stored_parameters']):,}")
    else:
        log("\nno trial finished all stages")
    if sweep.variant == "all":
        summary["best_per_variant"] = best_per_variant(table, num_stages)
        log("\nbest finished trial per variant:\n" + format_table(summary["best_per_variant"], VARIANT_COLUMNS))
    tracking.log_parent_files(uri, parent, files)
    tracking.set_status(uri, parent, "FINISHED")
    log(f"\nresults: {files[0]}")
    backend = f" --backend-store-uri {uri}" if not uri.startswith("http") else ""
    log(f"MLflow UI: mlflow ui{backend} --port 5000   (then open http://127.0.0.1:5000)"
        if backend else f"MLflow UI: {uri}")
    return summary
