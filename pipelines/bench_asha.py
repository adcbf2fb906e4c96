"""ASHA by stage against the same search without early stopping: same seed, same budget of trials.

``python pipelines/bench_asha.py [num_samples=8] [noise_seeds=3] [any sweep or run key=value]`` runs the sweep
twice (scheduler=asha, then scheduler=none) and prints the stage-epochs each trained and the best final accuracy
each found. "Within noise" is measured, not assumed: each sweep's best config is run again with ``noise_seeds``
more seeds (in this process) and the two means are compared with the seeds' spread. Last line: one JSON object.

``python pipelines/bench_asha.py replay=A/results.parquet,B/results.parquet [orders=200]`` replays ASHA's rule
(Tune's asynchronous successive halving) on the per-stage tables of sweeps run with scheduler=none, for every rung
metric x grace period x reduction factor: the regret of each setting (the full sweep's best final val accuracy
minus that of the trial it picks, in points; in the order the trials ran and over random orders) and the
stage-epochs it saves. With at most 10 trials Optuna's TPE samples them all at random (its start-up trials), so the
trials an ASHA sweep of the same seed would run are these ones.
"""

from __future__ import annotations

import heapq
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipelines.sweeper.options import grace_stages as sweep_grace_stages
from pipelines.sweeper.options import parse_sweep_args
from pipelines.sweeper.tuner import run_sweep
from slora.config import RunConfig
from slora.configure import ConfigError, compose_run, keys_read, leaf_fields, split_overrides
from slora.metrics import projected_accuracy
from slora.runner import run_continual

REPORTED = ("adapter.rank", "optim.lr_direction", "optim.lr_magnitude", "optim.epochs", "adapter.normaliser",
            "adapter.carry_magnitudes", "adapter.magnitude_init")


def main(argv: list[str]) -> int:
    try:
        options = split_overrides(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if "replay" in options:
        return replay([Path(p) for p in options["replay"].split(",")], int(options.get("orders", 200)))
    noise_seeds = int(options.pop("noise_seeds", 3))
    argv = [f"{k}={v}" for k, v in options.items()]
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scheduler in ("asha", "none"):
            args = ["variant=slora", "num_samples=8", *argv, f"scheduler={scheduler}",
                    f"name=bench-{scheduler}", f"out_dir={tmp}/{scheduler}", f"storage_path={tmp}/ray",
                    f"tracking_uri=sqlite:///{Path(tmp).resolve()}/mlflow-{scheduler}.db"]
            try:
                sweep, run_overrides, space_overrides = parse_sweep_args(args)
            except ConfigError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            summary = run_sweep(sweep, run_overrides, space_overrides, log=lambda *_: None)
            best = summary.get("best", {})
            figures[scheduler] = {
                "stage_epochs": summary["stage_epochs"], "wall_seconds": round(summary["wall_seconds"], 1),
                "best_trial": best.get("trial"), "best_accuracy": best.get("test_accuracy"),
                "best_trial_config": {k: best[k] for k in REPORTED if k in best},
                "best_over_seeds": seed_spread(best, noise_seeds, Path(tmp) / f"seeds-{scheduler}") if best else None,
            }
            print(f"{scheduler:>5}: {figures[scheduler]['stage_epochs']} stage-epochs, best final accuracy "
                  f"{figures[scheduler]['best_accuracy']}, {figures[scheduler]['wall_seconds']} s; best config over "
                  f"seeds {figures[scheduler]['best_over_seeds']}", flush=True)
    saved = 1 - figures["asha"]["stage_epochs"] / max(figures["none"]["stage_epochs"], 1)
    figures["stage_epochs_saved"] = round(saved, 3)
    figures["same_best_config"] = figures["asha"]["best_trial_config"] == figures["none"]["best_trial_config"]
    a, b = figures["asha"]["best_over_seeds"], figures["none"]["best_over_seeds"]
    if a and b:
        gap = b["mean"] - a["mean"]
        figures["best_mean_gap"] = round(gap, 4)
        figures["within_noise"] = figures["same_best_config"] or gap <= max(a["sd"], b["sd"])
    print(f"ASHA trained {saved:.0%} fewer stage-epochs; same best config: {figures['same_best_config']}; "
          f"within noise: {figures.get('within_noise')}")
    print(json.dumps(figures))
    return 0


def seed_spread(best: dict, extra_seeds: int, out_dir: Path) -> dict:
    """Final test accuracy of the best trial's config over its own seed and ``extra_seeds`` more (run here)."""
    paths = leaf_fields(RunConfig)
    flat, _ = keys_read({k: str(v) for k, v in best.items() if k in paths and k != "out_dir" and v is not None},
                        str(best.get("variant")))  # a trial logs every key, also those its method ignores
    seed = int(flat.get("seed", 0))
    accuracies = [best["test_accuracy"]]
    for extra in range(1, extra_seeds + 1):
        cfg = compose_run({**flat, "seed": str(seed + extra), "progress": "false", "save_merged": "none",
                            "out_dir": str(out_dir / str(seed + extra))})
        accuracies.append(run_continual(cfg, log=lambda *_: None)["final_test_accuracy"])
    return {"accuracies": [round(a, 4) for a in accuracies], "mean": round(statistics.mean(accuracies), 4),
            "sd": round(statistics.stdev(accuracies), 4) if len(accuracies) > 1 else 0.0}


# -- replay ---------------------------------------------------------------------------------------------------------

RUNG_METRICS = ("val_average_incremental_accuracy", "val_accuracy", "val_accuracy_old", "val_projected_accuracy")
GRACES = ("1", "0.3", "0.5", "old>new")  # stages, a fraction of the sequence, or the first stage with more old classes
REDUCTIONS = (2, 3, 4)


def replay(paths: list[Path], orders: int) -> int:
    """ASHA's rule replayed on the per-stage tables of full sweeps, for every setting of RUNG_METRICS x GRACES x
    REDUCTIONS: regret (the full sweep's best final val accuracy minus that of the trial the setting picks, in
    points) over the trial order as run and ``orders`` random orders, and the stage-epochs saved."""
    sweeps = {}
    for path in paths:
        curves = load_curves(path)
        if curves is None:
            return 2
        sweeps[path.parent.name or str(path)] = curves
    for name, curves in sweeps.items():
        stages = len(next(iter(curves.values())))
        final = {t: c[stages]["val_accuracy"] for t, c in curves.items()}
        print(f"{name}: {len(curves)} trials x {stages} stages, best final val accuracy {max(final.values()):.2%}")
    rows = []
    for metric in RUNG_METRICS:
        for grace in GRACES:
            for reduction in REDUCTIONS:
                rows.append(setting_row(sweeps, metric, grace, reduction, orders))
    rows.sort(key=lambda r: (r["worst_regret"], r["median_regret"], -r["saved"]))
    print("| rung metric | grace | reduction | median regret | worst regret | worst as run | stage-epochs saved |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['metric'].removeprefix('val_')} | {r['grace']} | {r['reduction_factor']} | "
              f"{r['median_regret']:.2f} | {r['worst_regret']:.2f} | {r['worst_as_run']:.2f} | {r['saved']:.0%} |")
    print(json.dumps(rows))
    return 0


def load_curves(path: Path) -> dict[str, dict[int, dict]] | None:
    rows = pq.read_table(path).to_pylist()
    curves: dict[str, dict[int, dict]] = {}
    for row in rows:
        curves.setdefault(row["trial"], {})[int(row["stage"])] = row
    stages = max(max(c) for c in curves.values())
    if any(max(c) != stages for c in curves.values()):
        print(f"error: {path}: every trial must have run all {stages} stages (a sweep with scheduler=none)",
              file=sys.stderr)
        return None
    for curve in curves.values():  # what the workers report as val_projected_accuracy, for sweeps made before it
        for stage, row in curve.items():
            row["val_projected_accuracy"] = projected_accuracy([curve[s]["val_accuracy"] for s in range(1, stage + 1)],
                                                               stages)
    return curves  # in the order the sweep listed its trials: the order Tune created them


def grace_stages(grace: str, curves: dict[str, dict[int, dict]], stages: int) -> int:
    if grace == "old>new":  # the first stage whose old classes outnumber its new ones
        sizes = task_sizes(curves, stages)
        return next((s + 1 for s in range(1, stages) if sum(sizes[:s]) > sizes[s]), stages)
    return sweep_grace_stages(float(grace), stages)  # as the sweep's ASHA counts it


def task_sizes(curves: dict[str, dict[int, dict]], stages: int) -> list[int]:
    row = next(iter(curves.values()))[1]
    if row.get("data.task_sizes"):
        return [int(n) for n in str(row["data.task_sizes"]).split(",")]
    return [1] * stages  # equal tasks


def setting_row(sweeps: dict, metric: str, grace: str, reduction: int, orders: int) -> dict:
    regrets, as_run, saved = [], [], []
    for curves in sweeps.values():
        stages = len(next(iter(curves.values())))
        final = {t: c[stages]["val_accuracy"] for t, c in curves.items()}
        best = max(final.values())
        first = grace_stages(grace, curves, stages)
        run_order = list(curves)
        fraction, pick = replay_asha(curves, run_order, stages, metric, first, reduction)
        as_run.append(100 * (best - final[pick]))
        sweep_regrets = []
        for order in range(orders):
            names = sorted(curves)
            random.Random(order).shuffle(names)
            fraction, pick = replay_asha(curves, names, stages, metric, first, reduction)
            saved.append(fraction)
            sweep_regrets.append(100 * (best - final[pick]))
        regrets.append(float(np.mean(sweep_regrets)))
    return {"metric": metric, "grace": grace, "reduction_factor": reduction,
            "median_regret": round(float(np.median(regrets)), 3), "worst_regret": round(max(regrets), 3),
            "worst_as_run": round(max(as_run), 3), "saved": round(float(np.mean(saved)), 3),
            "regret_per_sweep": [round(r, 3) for r in regrets], "as_run_per_sweep": [round(r, 3) for r in as_run]}


def replay_asha(curves, order, stages, metric, grace, reduction, concurrency=2, startup=10.0):
    """Tune's ASHA on recorded curves: ``concurrency`` slots, a stage lasting its epochs, a start-up cost per trial;
    at a rung a trial stops when below the (1 - 1/reduction) quantile of those recorded there before it. A rung
    metric a stage does not have (old-class accuracy at stage 1) falls back to its accuracy."""
    rungs, milestone = [], grace
    while milestone < stages:
        rungs.append(milestone)
        milestone *= reduction
    recorded: dict[int, list[float]] = {m: [] for m in rungs}
    epochs = {t: int(curves[t][1]["optim.epochs"]) for t in order}
    queue, events, stopped = list(order), [], {}
    for _ in range(concurrency):
        if queue:
            trial = queue.pop(0)
            heapq.heappush(events, (startup + epochs[trial], trial, 1))
    while events:
        now, trial, stage = heapq.heappop(events)
        row = curves[trial][stage]
        value = row.get(metric)
        if value is None or value != value:
            value = row["val_accuracy"]
        stop = False
        if stage in recorded:
            seen = recorded[stage]
            stop = bool(seen) and value < np.nanpercentile(seen, 100 * (1 - 1 / reduction))
            seen.append(value)
        if stop or stage == stages:
            stopped[trial] = stage
            if queue:
                nxt = queue.pop(0)
                heapq.heappush(events, (now + startup + epochs[nxt], nxt, 1))
        else:
            heapq.heappush(events, (now + epochs[trial], trial, stage + 1))
    trained = sum(epochs[t] * stopped[t] for t in order)
    finished = [t for t in order if stopped[t] == stages]
    best = max(finished, key=lambda t: curves[t][stages]["val_accuracy"])
    return 1 - trained / sum(epochs[t] * stages for t in order), best


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
