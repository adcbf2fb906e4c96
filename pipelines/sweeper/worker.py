"""The stage loop of one Ray Train worker of a sweep trial.

Each worker runs slora.continual.ContinualRun (the same stage loop as pipelines/run.py) under DDP. After every stage
rank 0 logs to MLflow, then every rank reports (rank 0 with the stage checkpoint, slora/checkpoint.py), then all
wait until that checkpoint is committed: a killed worker resumes from the last finished stage, never an older one
(docs/platform.md §7).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import torch

from slora.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from slora.continual import ContinualRun
from slora.data import load_benchmark
from slora.runner import save_merged_stage
from slora.metrics import projected_accuracy
from slora.seeds import mean_over_seeds, seed_config
from slora.configure import flat_config, resolved_defaults
from slora.learners import logged_params

from . import tracking

NODE_TAG = "ray_node_id"


def train_worker(config: dict) -> None:
    """One DDP rank of a trial: restore the last committed stage, then train, log, report stage by stage.

    With seeds_per_trial = K the trial is K continual runs of its config (slora.seeds) advanced stage by stage
    together: every report carries their mean (and `_std`), which ASHA and Optuna read; rank 0 logs seed 0's
    accuracy matrix and merged model.
    """
    import ray
    import ray.train
    import ray.train.torch

    torch.set_num_threads(config["threads"])
    context = ray.train.get_context()
    ddp_rank, world_size = context.get_world_rank(), context.get_world_size()
    # the GPU Ray Train gave this worker (training, data and evaluation run there), unless the run says cpu
    device = torch.device("cpu") if config["run"].device == "cpu" else ray.train.torch.get_device()
    runs = _seed_runs(config["run"], config["seeds_per_trial"], device, ddp_rank, world_size)
    run = runs[0]
    if ddp_rank == 0:  # the node rank 0 runs on (the latest attempt's): where a cluster put the trial
        tracking.client(config["tracking_uri"]).set_tag(config["run_id"], NODE_TAG,
                                                         ray.get_runtime_context().get_node_id())
        tracking.log_params(config["tracking_uri"], config["run_id"], resolved_params(run, device))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            load_checkpoint(runs, Path(folder) / CHECKPOINT_FILE)
        if run.state.stages_done == run.num_stages:
            # Every stage was committed, but Tune may not have recorded the end (a sweep interrupted just after it,
            # then resumed): report the last stage again, without training or logging, so it counts as finished.
            ray.train.report(_tune_metrics(mean_over_seeds([r.state.results[-1] for r in runs]), run.num_stages))
    while run.state.stages_done < run.num_stages:
        _fault_drill(config, run.state.stages_done + 1, ddp_rank)
        results = [seed_run.run_stage() for seed_run in runs]
        stage = results[0].stage
        metrics = _tune_metrics(mean_over_seeds([{**r.metrics(), **projected(seed_run)}
                                                 for r, seed_run in zip(results, runs)]), stage)
        if ddp_rank == 0 and stage == 1:  # which folder / class id each label position is
            tracking.log_dict(config["tracking_uri"], config["run_id"], _class_legend(run), "classes.json")
        if ddp_rank == 0:  # log before report: a scheduler may stop the trial at the report
            merged = _merged_folder(config["save_merged"], run, stage)
            tracking.log_stage(config["tracking_uri"], config["run_id"], metrics, stage,
                               run.accuracy_matrix("test"), merged)
            if merged is not None:
                shutil.rmtree(merged, ignore_errors=True)
        with tempfile.TemporaryDirectory() as folder:
            stage_checkpoint = None
            if ddp_rank == 0:
                save_checkpoint(runs, Path(folder) / CHECKPOINT_FILE)
                stage_checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=stage_checkpoint, checkpoint_dir_name=f"stage_{stage:02d}")
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)


def resolved_params(run: ContinualRun, device) -> dict:
    """What the config's resolved values became (slora.configure.resolved_defaults), the classes of each task and
    the LoRA rank each task gets (rank reduction lowers it): the run shows what it actually trained."""
    cfg, bench = run.cfg, run.bench
    out = {"data.num_tasks": len(bench.task_sizes), "data.image_size": bench.image_shape[-1],
           "optim.first_task_epochs": cfg.optim.first_task_epochs or cfg.optim.epochs, "device": device.type,
           "data.task_sizes": ",".join(map(str, bench.task_sizes)), "data.num_classes": sum(bench.task_sizes),
           "data.image_shape": ",".join(map(str, bench.image_shape))}
    out.update(logged_params(cfg, len(bench.task_sizes)))  # the method's own (S-LoRA: each task's rank)
    given = flat_config(cfg)  # a value the trial driver logged stays as it is (MLflow params are write-once)
    auto = resolved_defaults()
    return {k: v for k, v in out.items() if k not in auto or given[k] == auto[k]}


def _seed_runs(cfg, seeds: int, device, ddp_rank: int, world_size: int) -> list[ContinualRun]:
    runs: list[ContinualRun] = []
    for s in range(seeds):  # seed s > 0 shifts the class order from the one seed 0's benchmark drew
        seeded = seed_config(cfg, s, runs[0].bench.order_seed) if runs else cfg
        runs.append(ContinualRun(seeded, load_benchmark(seeded.data), device=device, ddp_rank=ddp_rank,
                                 world_size=world_size, wrap=_ddp(world_size, device)))
    return runs


def projected(run: ContinualRun) -> dict:
    """val_projected_accuracy, a rung metric for ASHA (slora.metrics.projected_accuracy): the val accuracy curve's
    end if it kept its latest slope."""
    curve = run.state.curve.get("val")
    return {"val_projected_accuracy": projected_accuracy(curve, run.num_stages)} if curve else {}


def _tune_metrics(stage_metrics: dict, stage: int) -> dict:
    metrics = {k: v for k, v in stage_metrics.items() if v == v}  # drop NaN (old accuracy at stage 1)
    metrics["stages_done"] = stage  # ASHA's time unit: 1-based, survives driver restarts
    return metrics


def _ddp(world_size: int, device: torch.device):
    if world_size == 1:
        return lambda model: model

    def wrap(model):
        # A new DDP wrapper per stage: each task brings new parameters (direction, magnitudes, head rows).
        ids = [device] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    return wrap


def _merged_folder(save_merged: str, run: ContinualRun, stage: int) -> Path | None:
    if save_merged == "none" or (save_merged == "last" and stage != run.num_stages):
        return None
    folder = Path(tempfile.mkdtemp(prefix="slora-merged-"))
    return save_merged_stage(run, folder, stage)


def _fault_drill(config: dict, stage: int, ddp_rank: int) -> None:
    """Kill this worker process hard, once per trial, at the start of the given stage (fault-tolerance tests)."""
    if ddp_rank != 0 or config["kill_worker_at_stage"] != stage:
        return
    marker = Path(tempfile.gettempdir()) / f"slora-killed-{config['run_id']}"
    if marker.exists():
        return
    marker.write_text(json.dumps({"stage": stage, "pid": os.getpid()}))
    os.kill(os.getpid(), signal.SIGKILL)


def _class_legend(run: ContinualRun) -> dict:
    bench = run.bench
    return {"class_order": bench.class_order, "class_names": [bench.class_names[c] for c in bench.class_order],
            "task_sizes": bench.task_sizes}
