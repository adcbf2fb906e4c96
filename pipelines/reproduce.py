"""Reproduce the paper in one command: SD-LoRA, -RR and -KD with the official settings on the authors' five seeds,
measured mean and standard error next to the paper's Tables 2, 3 and 6 and the official logs' curves.

``python pipelines/reproduce.py benchmark=cifar100 data_root=DIR [backbone.checkpoint=FOLDER] [seeds=1993,...]
[methods=slora,slora_rr,slora_kd] [out_dir=runs/reproduce-<benchmark>] [tracking_uri=URI] [any run key=value]``

Seed s trains with seed s and draws the class order with seed s, as the official code's seed does. Each run writes
its own folder under out_dir; a finished run of the same config is reused, so an interrupted reproduction continues
where it stopped. The table goes to stdout and reproduce.md, the per-seed rows to reproduce.parquet, and both to an
MLflow run of kind "reproduction" (experiment slora-reproduce).
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.paper_tables import METHODS, OFFICIAL_LOGS, PAPER, SEEDS
from pipelines.tables import finished_results
from pipelines.sweeper import tracking
from slora.configure import ConfigError, compose_run, keys_for, split_overrides
from slora.runner import run_continual

SCORES = ("test_accuracy", "test_average_incremental_accuracy", "test_forgetting")


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    try:
        configs, benchmark, out_dir, uri = plan(argv)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = []
    for method, seed, cfg in configs:
        results = finished_results(cfg) or run_continual(cfg, log=lambda *_: None)
        rows.append({"method": method, "seed": seed, **{k: results[f"final_{k}"] for k in SCORES},
                     "test_accuracy_curve": results["test_accuracy_curve"]})
        print(f"{method:>8} seed {seed}: test accuracy {rows[-1]['test_accuracy']:.2%}", flush=True)
    table = reproduction_table(benchmark, rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out_dir / "reproduce.parquet")
    (out_dir / "reproduce.md").write_text(table + "\n")
    files = [out_dir / "reproduce.md", out_dir / "reproduce.parquet"]
    tracking.log_table(uri or tracking.default_tracking_uri(Path.cwd()), "slora-reproduce", f"reproduce-{benchmark}",
                       "reproduction", rows, ("method",), SCORES, files)
    print(table)
    return 0


def plan(argv: list[str]):
    """Every (method, seed, config), checked before anything trains."""
    overrides = split_overrides(argv)
    benchmark = overrides.pop("benchmark", "") or overrides.pop("data.benchmark", "")
    if benchmark not in PAPER:
        raise ConfigError(f"benchmark={benchmark or '(missing)'}: the paper reports {', '.join(PAPER)}")
    seeds = [int(s) for s in overrides.pop("seeds", ",".join(map(str, SEEDS))).split(",")]
    methods = overrides.pop("methods", ",".join(METHODS)).split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"methods={unknown[0]}: the paper's variants are {', '.join(METHODS)}")
    out_dir = Path(overrides.pop("out_dir", f"runs/reproduce-{benchmark}")).resolve()
    uri = overrides.pop("tracking_uri", "")
    common = {**overrides, "benchmark": benchmark, "semantics": "official", "progress": "false", "save_merged": "none"}
    configs = []
    for method in methods:
        keys = keys_for(method, common)
        for seed in seeds:
            cfg = compose_run({**keys, "variant": method, "seed": str(seed), "data.class_order_seed": str(seed),
                               "out_dir": str(out_dir / f"{method}-{seed}")})
            configs.append((method, seed, cfg))
    return configs, benchmark, out_dir, uri


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (the paper's bracketed figure), in %."""
    mean = statistics.fmean(values) * 100
    se = statistics.stdev(values) * 100 / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, se


def reproduction_table(benchmark: str, rows: list[dict]) -> str:
    def cell(mean, se):
        return f"{mean:.2f}" + (f" ({se:.2f})" if se is not None and se == se else "")

    seeds = sorted({r["seed"] for r in rows})
    lines = [f"{benchmark}, {len(seeds)} seeds ({', '.join(map(str, seeds))}); mean (standard error), %",
             "", "| method | Acc | paper Acc | AAA | paper AAA | forgetting |", "|---|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        acc, aaa, forget = (mean_se([r[k] for r in group]) for k in SCORES)
        paper_acc, paper_aaa, paper_acc_se, paper_aaa_se = PAPER[benchmark][method]
        lines.append(f"| {method} | {cell(*acc)} | {cell(paper_acc, paper_acc_se)} | {cell(*aaa)} | "
                     f"{cell(paper_aaa, paper_aaa_se)} | {cell(*forget)} |")
    slora = [r["test_accuracy_curve"] for r in rows if r["method"] == "slora"]
    if benchmark in OFFICIAL_LOGS and slora:
        log, seed, curve = OFFICIAL_LOGS[benchmark]
        mean_curve = [statistics.fmean(c[k] for c in slora) * 100 for k in range(len(slora[0]))]
        measured = ", ".join(f"{v:.2f}" for v in mean_curve)
        lines += ["", f"slora test accuracy after each task, mean over seeds: {measured}",
                  f"official {log} (one run, class-order seed {seed}):          {', '.join(f'{v:.2f}' for v in curve)}"]
        if len(mean_curve) != len(curve):
            lines.append(f"(the runs had {len(mean_curve)} tasks, the log {len(curve)}: not comparable point by point)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
