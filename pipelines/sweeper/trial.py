"""A sweep trial: a Tune function (the driver) that runs one continual sequence as a Ray Train TorchTrainer.

The stage loop each Train worker runs is in pipelines/sweeper/worker.py. This module is imported by every trial
driver and unpickled by Ray Train's controller, so it imports neither torch nor timm nor the data loaders: on two
cores each of those imports costs seconds, paid again by every trial.
"""

from __future__ import annotations

from dataclasses import dataclass

from slora.config import RunConfig
from slora.configure import compose_run, flat_config, resolved_defaults

from . import tracking


@dataclass
class TrialSettings:
    """Everything a trial needs besides its sampled parameters; plain values so it pickles to Ray."""

    base_overrides: dict
    constants: dict
    tracking: tracking.TrackingTarget
    storage_path: str
    workers_per_trial: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_failures: int
    save_merged: str  # every | last | none
    kill_worker_at_stage: int = 0  # fault drill: rank 0 SIGKILLs itself once at the start of this stage
    seeds_per_trial: int = 1  # the trial runs its config on this many seeds and reports their mean


def trial_config(settings: TrialSettings, sampled: dict) -> RunConfig:
    """The sweep's run keys, the space's constants, then the trial's sampled values: composed and checked once,
    here; the Train workers get the typed object."""
    return compose_run({**settings.base_overrides, **settings.constants, **sampled})


def trial_driver(config: dict, settings: TrialSettings) -> None:
    """The Tune trainable. Returns nothing: a returned dict would become an extra all-NaN result
    (docs/platform.md §2)."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    context = ray.tune.get_context()
    trial_id = context.get_trial_id()
    cfg = trial_config(settings, config)
    cfg.progress = False
    cfg.save_merged = settings.save_merged  # what the trial does, so what its run shows
    auto = resolved_defaults()  # values the Train worker resolves and logs itself (worker.py resolved_params)
    params = {k: v for k, v in flat_config(cfg).items() if not (k in auto and v == auto[k])}
    params.update({"resources.workers": settings.workers_per_trial, "resources.cpus_per_worker":
                   settings.cpus_per_worker, "resources.gpus_per_worker": settings.gpus_per_worker})
    run_id = tracking.child_run(settings.tracking, trial_id, run_name(cfg.variant, config, trial_id), params,
                                {"slora.searched": ",".join(sorted(config)), "slora.variant": cfg.variant})
    use_gpu = settings.gpus_per_worker > 0
    resources = {"CPU": settings.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = settings.gpus_per_worker
    # NCCL where the workers train on their GPUs; gloo on CPU, also for device=cpu trials holding GPU bundles
    backend = "nccl" if use_gpu and cfg.device != "cpu" else "gloo"
    trainer = TorchTrainer(
        train_worker,
        torch_config=TorchConfig(backend=backend),
        train_loop_config={
            "run": cfg,
            "tracking_uri": settings.tracking.tracking_uri,
            "run_id": run_id,
            "save_merged": settings.save_merged,
            "kill_worker_at_stage": settings.kill_worker_at_stage,
            "seeds_per_trial": settings.seeds_per_trial,
            "threads": max(1, int(settings.cpus_per_worker)),  # one torch thread per whole CPU held
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.workers_per_trial, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",  # stable: a restarted driver's trainer restores from storage_path/name
            storage_path=settings.storage_path,
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
        ),
    )
    # A failure (NaN loss, too many lost workers) fails this trial alone; its run is ended by the sweep's process
    # (endings.py), which can tell a failure from a stop by ASHA.
    trainer.fit()


def run_name(variant: str, sampled: dict, trial_id: str) -> str:
    """What the trial is, at a glance in the runs table: its method, its searched values (rank, learning rates and
    epochs first: what a reader compares; the UI cuts long names), a short id."""
    sampled = {k: v for k, v in sampled.items() if k != "variant"}
    leaves = [k.rsplit(".", 1)[-1] for k in sampled]

    def order(key: str):
        leaf = key.rsplit(".", 1)[-1]
        return (0 if leaf == "rank" else 1 if leaf.startswith("lr") else 2 if leaf == "epochs" else 3, key)

    values = []
    for key in sorted(sampled, key=order):
        leaf = key.rsplit(".", 1)[-1]
        label = leaf if leaves.count(leaf) == 1 else key
        value = sampled[key]
        values.append(f"{label}={value:.2g}" if isinstance(value, float) else f"{label}={value}")
    return " ".join([variant, *values, trial_id])  # Tune's trial ids are 8 hex digits


def train_worker(config: dict) -> None:
    """One DDP rank of a trial (pipelines/sweeper/worker.py); imported here, in the worker, and nowhere else."""
    from .worker import train_worker as run_worker

    run_worker(config)
