"""One continual run: ``python pipelines/run.py variant=slora_pp benchmark=digits [key=value ...]``.

--help lists every key with its default; --cfg job prints the composed config; resume=true out_dir=DIR continues
an interrupted run from its last finished stage. ``-m`` / ``--multirun`` runs a grid as Hydra does
(``python pipelines/run.py -m rank=4,8,16 seed=range(0,3)``): every combination in sequence, each in its own
folder under out_dir (default runs/multirun-<time>), then one table of their final scores (multirun.md there)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from slora.configure import (ConfigError, compose_run, compose_yaml, expand_sweeps, run_keys_help, split_overrides,
                             wants_config, wants_help, wants_multirun)
from slora.runner import run_continual

SCORES = ("test_accuracy", "test_average_incremental_accuracy", "test_forgetting")


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(__doc__.strip() + "\n\n" + run_keys_help())
        return 0
    try:
        show, argv = wants_config(argv)
        multirun, argv = wants_multirun(argv)
        if multirun:
            return run_grid(argv, show)
        if show:
            print(compose_yaml(argv), end="")
            return 0
        run_continual(compose_run(argv))  # data and backbone errors are ConfigErrors too, raised before training
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run_grid(argv: list[str], show: bool = False) -> int:
    """Every point of the grid, checked before the first one trains, then run in sequence."""
    points = expand_sweeps(argv)
    swept = [key for key, values in _values(points).items() if len(values) > 1]
    root = Path(split_overrides(argv).get("out_dir") or f"runs/multirun-{time.strftime('%Y%m%d-%H%M%S')}")
    jobs = []
    for i, point in enumerate(points):
        label = ",".join(a.replace("/", "_") for a in point if a.split("=", 1)[0] in swept) or "run"
        job = [a for a in point if not a.startswith("out_dir=")] + [f"out_dir={root / f'{i}-{label}'}"]
        jobs.append((label, job, compose_run(job)))  # a bad point stops the grid before anything trains
    if show:
        for label, job, _ in jobs:
            print(f"# {label}\n{compose_yaml(job)}", end="")
        return 0
    print(f"multirun: {len(jobs)} runs over {', '.join(swept) or 'no swept key'}, in {root}")
    rows = []
    for label, _, cfg in jobs:
        print(f"\n== {label}", flush=True)
        results = run_continual(cfg)
        rows.append((label, cfg.out_dir, *(results[f"final_{score}"] for score in SCORES)))
    table = "\n".join(["| run | accuracy | AAA | forgetting | folder |", "|---|---|---|---|---|",
                       *(f"| {label} | {acc:.2%} | {aaa:.2%} | {fgt:.2%} | {folder} |"
                         for label, folder, acc, aaa, fgt in rows)])
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.md").write_text(table + "\n")
    print(f"\nfinal test scores of the {len(rows)} runs ({root / 'multirun.md'}):\n{table}")
    return 0


def _values(points: list[list[str]]) -> dict[str, set[str]]:
    values: dict[str, set[str]] = {}
    for point in points:
        for arg in point:
            key, value = arg.split("=", 1)
            values.setdefault(key, set()).add(value)
    return values


def cli() -> None:
    """The `slora-run` console script (pyproject.toml [project.scripts])."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
