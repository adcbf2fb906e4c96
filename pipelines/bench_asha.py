"""ASHA by stage against the same search without early stopping: same seed, same budget of trials.

``python pipelines/bench_asha.py [num_samples=8] [noise_seeds=3] [any sweep or run key=value]`` runs the sweep
twice (scheduler=asha, then scheduler=none) and prints the stage-epochs each trained and the best final accuracy
each found. "Within noise" is measured, not assumed: each sweep's best config is run again with ``noise_seeds``
more seeds (in this process) and the two means are compared with the seeds' spread. Last line: one JSON object.

``python pipelines/bench_asha.py replay=RESULTS.parquet [orders=200]`` replays ASHA's rule (Tune's asynchronous
successive halving) on the per-stage table of a sweep run with scheduler=none, for several rung metrics and
reduction factors over random trial orders: what each setting would have saved and how often it kept the winner.
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

from pipelines.sweeper.options import parse_sweep_args
from pipelines.sweeper.tuner import run_sweep
from slora.config import RunConfig
from slora.configure import ConfigError, compose_run, leaf_fields, split_overrides
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
        return replay(Path(options["replay"]), int(options.get("orders", 200)))
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
    flat = {k: str(v) for k, v in best.items() if k in paths and k != "out_dir" and v is not None}
    seed = int(flat.get("seed", 0))
    accuracies = [best["test_accuracy"]]
    for extra in range(1, extra_seeds + 1):
        cfg = compose_run({**flat, "seed": str(seed + extra), "progress": "false", "save_merged": "none",
                            "out_dir": str(out_dir / str(seed + extra))})
        accuracies.append(run_continual(cfg, log=lambda *_: None)["final_test_accuracy"])
    return {"accuracies": [round(a, 4) for a in accuracies], "mean": round(statistics.mean(accuracies), 4),
            "sd": round(statistics.stdev(accuracies), 4) if len(accuracies) > 1 else 0.0}


# -- replay ---------------------------------------------------------------------------------------------------------

def replay(path: Path, orders: int) -> int:
    rows = pq.read_table(path).to_pylist()
    curves: dict[str, dict[int, dict]] = {}
    for row in rows:
        curves.setdefault(row["trial"], {})[int(row["stage"])] = row
    stages = max(max(c) for c in curves.values())
    if any(max(c) != stages for c in curves.values()):
        print(f"error: {path}: every trial must have run all {stages} stages (a sweep with scheduler=none)",
              file=sys.stderr)
        return 2
    final = {t: c[stages]["val_accuracy"] for t, c in curves.items()}  # the winner is chosen on validation
    winner = max(final, key=final.get)
    print(f"{len(curves)} trials x {stages} stages; winner {winner} at {final[winner]:.2%}")
    results = []
    for metric in ("val_accuracy", "val_average_incremental_accuracy"):
        for reduction in (2, 3, 4):
            saved, kept, gaps = [], 0, []
            for order in range(orders):
                names = sorted(curves)
                random.Random(order).shuffle(names)
                fraction, found = replay_asha(curves, names, stages, metric, grace=1, reduction=reduction)
                saved.append(fraction)
                kept += found == winner
                gaps.append(final[winner] - final[found])
            results.append({"metric": metric, "reduction_factor": reduction, "saved": round(float(np.mean(saved)), 3),
                            "winner_kept": round(kept / orders, 3), "mean_gap": round(float(np.mean(gaps)), 4)})
            print(f"{metric:>28} reduction {reduction}: {np.mean(saved):.0%} fewer stage-epochs, winner kept in "
                  f"{kept / orders:.0%} of {orders} orders, mean gap {100 * np.mean(gaps):.1f} points")
    print(json.dumps(results))
    return 0


def replay_asha(curves, order, stages, metric, grace, reduction, concurrency=2, startup=10.0):
    """Tune's ASHA on recorded curves: ``concurrency`` slots, a stage lasting its epochs, a start-up cost per trial;
    at a rung a trial stops when below the (1 - 1/reduction) quantile of those recorded there before it."""
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
        value = curves[trial][stage][metric]
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
