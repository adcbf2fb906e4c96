"""One continual run on one machine: stages, merged checkpoints and results.json in an output folder."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from .config import RESULTS_VERSION, RunConfig
from .continual import ContinualRun
from .data import load_benchmark
from .checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from .configure import ConfigError, to_dict
from .report import stage_table


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_out_dir(cfg: RunConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.variant}-{cfg.data.benchmark}-{stamp}"


def run_continual(cfg: RunConfig, log=print) -> dict:
    """Run every stage (after the last finished one with resume=true), save the merged model of each (or the last)
    stage and the stage checkpoint, write results.json; return it."""
    out_dir = Path(cfg.out_dir or default_out_dir(cfg)).resolve()
    checkpoint = out_dir / CHECKPOINT_FILE
    if cfg.resume and not checkpoint.is_file():
        raise ConfigError(f"resume=true: no {CHECKPOINT_FILE} in out_dir={out_dir}; give the out_dir of an "
                          f"interrupted run")
    run = start_run(cfg)
    if cfg.resume:
        load_checkpoint([run], checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = run.bench
    log(f"{cfg.variant} on {bench.name}: {run.num_stages} stages, classes per task {run.bench.task_sizes}, "
        f"backbone {cfg.backbone.name}; writing to {out_dir}"
        + (f"; resuming after stage {run.state.stages_done}" if cfg.resume else ""))
    while run.state.stages_done < run.num_stages:
        result = run.run_stage()
        last = result.stage == run.num_stages
        if cfg.save_merged == "every" or (cfg.save_merged == "last" and last):
            save_merged_stage(run, out_dir / "merged" / f"stage_{result.stage:02d}", result.stage)
        save_checkpoint([run], checkpoint)
    results = summarise(cfg, run)
    (out_dir / "results.json").write_text(json.dumps(_json_safe(results), indent=1))
    log(stage_table(run.state.results))
    for split in bench.splits:
        log(f"final {split}: accuracy {results[f'final_{split}_accuracy']:.2%}  "
            f"AAA {results[f'final_{split}_average_incremental_accuracy']:.2%}  "
            f"forgetting {results[f'final_{split}_forgetting']:.2%}")
    log(f"-> {out_dir / 'results.json'}")
    return results


def start_run(cfg: RunConfig) -> ContinualRun:
    """Data and backbone, before any training: their errors (a missing dataset, unreachable weights) name the
    value and the fix, so they surface as ConfigError, one line, like a bad key."""
    try:
        return ContinualRun(cfg, load_benchmark(cfg.data), device=resolve_device(cfg.device))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def save_merged_stage(run: ContinualRun, folder: Path, stage: int) -> Path:
    extra = {"stage": stage, "class_order": run.bench.class_order,
             "class_names": [run.bench.class_names[c] for c in run.bench.class_order[: run.learner.num_classes]],
             "variant": run.cfg.variant, "backbone": run.cfg.backbone.name, "image_shape": list(run.bench.image_shape)}
    return run.learner.export(run.last_merged, folder, run.mean.flatten().tolist(), run.std.flatten().tolist(), extra)


FINAL_SCORES = ("accuracy", "average_incremental_accuracy", "forgetting")


def summarise(cfg: RunConfig, run: ContinualRun) -> dict:
    """results.json: final_<split>_<score>, each split's curve and accuracy matrix, the full resolved config."""
    last = run.state.results[-1]
    splits = run.bench.splits
    return {
        "results_version": RESULTS_VERSION,
        **{f"final_{split}_{score}": last[f"{split}_{score}"] for split in splits for score in FINAL_SCORES},
        "stored_parameters": last["stored_parameters"],
        **{f"{split}_accuracy_curve": run.state.curve[split] for split in splits},
        **{f"{split}_accuracy_matrix": run.accuracy_matrix(split) for split in splits},
        "stages": run.state.results,
        "class_order": run.bench.class_order,
        "class_names": [run.bench.class_names[c] for c in run.bench.class_order],
        "task_sizes": run.bench.task_sizes,
        "config": to_dict(cfg),
    }


def _json_safe(value):
    """NaN (e.g. old-class accuracy at stage 1) becomes null: strict JSON readers reject NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
