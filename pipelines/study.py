"""The accuracy study: every variant x semantics x seed on one benchmark, as a Markdown table of mean ± std.

``python pipelines/study.py benchmark=omniglot backbone.checkpoint=runs/pretrain-omniglot [seeds=3] [key=value ...]``

Seed s sets both the training seed and the class order (class_order_seed = the benchmark's default + s). Each
run writes its own folder under ``out_dir`` (default runs/study); the table goes to stdout and study.parquet.
A run whose folder already holds a results.json with the same resolved config is reused, not trained again, so an
interrupted study picks up where it stopped and adding seeds only trains the new ones.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from slora.config import RunConfig
from slora.overrides import ConfigError, build_config, config_from_dict, split_overrides
from slora.runner import run_continual
from slora.variants import VARIANTS

DEFAULT_CLASS_ORDER_SEED = 1993


def main(argv: list[str]) -> int:
    try:
        overrides = split_overrides(argv)
        seeds = int(overrides.pop("seeds", 3))
        variants = overrides.pop("variants", ",".join(VARIANTS)).split(",")
        out_dir = Path(overrides.pop("out_dir", "runs/study")).resolve()
        semantics_list = [overrides.pop("semantics")] if "semantics" in overrides else ["official", "paper"]
        configs = [
            (variant, semantics, seed, build_config({**overrides, "variant": variant, "semantics": semantics,
                                                     "seed": str(seed), "progress": "false", "save_merged": "none",
                                                     "class_order_seed": str(DEFAULT_CLASS_ORDER_SEED + seed),
                                                     "out_dir": str(out_dir / f"{variant}-{semantics}-{seed}")}))
            for semantics in semantics_list for variant in variants for seed in range(seeds)
        ]
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = []
    for variant, semantics, seed, cfg in configs:
        results = finished_results(cfg)
        reused = results is not None
        if not reused:
            results = run_continual(cfg, log=lambda *_: None)
        rows.append({"variant": variant, "semantics": semantics, "seed": seed,
                     "final_accuracy": results["final_accuracy"],
                     "average_incremental_accuracy": results["average_incremental_accuracy"],
                     "forgetting": results["forgetting"], "stored_parameters": results["stored_parameters"]})
        print(f"{variant:>9} {semantics:>8} seed {seed}: acc {results['final_accuracy']:.2%} "
              f"AAA {results['average_incremental_accuracy']:.2%} forgetting {results['forgetting']:.2%}"
              f"{' (reused)' if reused else ''}", flush=True)
    pq.write_table(pa.Table.from_pylist(rows), out_dir / f"study-{'-'.join(semantics_list)}.parquet")
    print(markdown_table(rows))
    return 0


def finished_results(cfg: RunConfig) -> dict | None:
    """The results.json already in the run's folder, if it was produced by exactly this config."""
    path = Path(cfg.out_dir) / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    try:  # a key added since the run was made takes its default, which reproduces the old behaviour
        same = config_from_dict(results.get("config", {})) == cfg
    except ConfigError:
        return None
    return results if same else None


def markdown_table(rows: list[dict]) -> str:
    lines = ["| variant | semantics | Acc | AAA | forgetting | stored params |", "|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["semantics"]), []).append(r)

    def cell(values):
        values = [100 * v for v in values]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {spread:.2f}"

    for (variant, semantics), group in groups.items():
        lines.append(f"| {variant} | {semantics} | {cell([g['final_accuracy'] for g in group])} | "
                     f"{cell([g['average_incremental_accuracy'] for g in group])} | "
                     f"{cell([g['forgetting'] for g in group])} | "
                     f"{statistics.mean(g['stored_parameters'] for g in group):,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
