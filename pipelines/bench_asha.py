"""ASHA by stage against the same search without early stopping: same seed, same budget of trials.

``python pipelines/bench_asha.py [num_samples=8] [any sweep or run key=value]`` runs the sweep twice (scheduler=asha,
then scheduler=none) and prints the stage-epochs each trained, the best final accuracy each found and its config;
the last line is one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from pipelines.sweeping import parse_sweep_args, run_sweep
from slora.overrides import ConfigError


def main(argv: list[str]) -> int:
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
                "best_accuracy": best.get("accuracy"), "best_trial_config": {
                    k: v for k, v in best.items() if k.startswith(("adapter.rank", "optim.lr", "optim.epochs",
                                                                   "adapter.normaliser", "adapter.carry",
                                                                   "adapter.magnitude_init"))},
            }
            print(f"{scheduler:>5}: {figures[scheduler]['stage_epochs']} stage-epochs, best final accuracy "
                  f"{figures[scheduler]['best_accuracy']}, {figures[scheduler]['wall_seconds']} s")
    saved = 1 - figures["asha"]["stage_epochs"] / max(figures["none"]["stage_epochs"], 1)
    figures["stage_epochs_saved"] = round(saved, 3)
    print(f"ASHA trained {saved:.0%} fewer stage-epochs")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
