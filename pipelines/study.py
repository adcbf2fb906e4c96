"""The accuracy study: every variant x semantics x seed on one benchmark, as a Markdown table of mean ± std.

``python pipelines/study.py benchmark=tinyimagenet data_root=DIR backbone.checkpoint=MODEL [seeds=3] [key=value ...]``

Seed s trains with seed + s and meets the classes in another order (class order seed + s; slora.seeds, as a sweep's
seeds_per_trial). Each run writes its own folder under ``out_dir`` (default runs/study); the table goes to stdout,
the per-run rows to study-<semantics>.parquet and the mean test-accuracy curves to study-curves.png. A run whose
folder holds a results.json of the current results version with the same resolved config is reused, not trained
again, so an interrupted study picks up where it stopped and adding seeds only trains the new ones.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.sweeper import tracking
from pipelines.tables import finished_results, markdown_cells
from slora.data import load_benchmark
from slora.configure import ConfigError, compose_run, keys_for, keys_read, split_overrides
from slora.runner import run_continual
from slora.seeds import seed_config
from slora.learners import SLORA_VARIANTS


def main(argv: list[str]) -> int:
    try:
        overrides = split_overrides(argv)
        seeds = int(overrides.pop("seeds", 3))
        variants = overrides.pop("variants", ",".join(SLORA_VARIANTS)).split(",")
        out_dir = Path(overrides.pop("out_dir", "runs/study")).resolve()
        semantics_list = [overrides.pop("semantics")] if "semantics" in overrides else ["official", "paper"]
        tracking_uri = overrides.pop("tracking_uri", "")  # where the table is logged ('' : sqlite <cwd>/mlflow.db)
        common = {**overrides, "progress": "false", "save_merged": "none"}
        order_seed = load_benchmark(compose_run({**keys_read(common, variants[0])[0], "variant": variants[0]}).data
                                    ).order_seed
        configs = []
        for semantics in semantics_list:
            for variant in variants:
                base = compose_run({**keys_for(variant, common), "variant": variant, "semantics": semantics})
                for s in range(seeds):
                    cfg = seed_config(base, s, order_seed)
                    cfg.out_dir = str(out_dir / f"{variant}-{semantics}-{s}")
                    configs.append((variant, semantics, s, cfg))
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = []
    started = time.perf_counter()
    for variant, semantics, seed, cfg in configs:
        results = finished_results(cfg)
        reused = results is not None
        if not reused:
            results = run_continual(cfg, log=lambda *_: None)
        rows.append({"variant": variant, "semantics": semantics, "seed": seed,
                     "final_accuracy": results["final_test_accuracy"],
                     "average_incremental_accuracy": results["final_test_average_incremental_accuracy"],
                     "forgetting": results["final_test_forgetting"], "stored_parameters": results["stored_parameters"],
                     "seconds": sum(stage["stage_seconds"] for stage in results["stages"]),
                     "curve": results["test_accuracy_curve"]})
        print(f"{variant:>9} {semantics:>8} seed {seed}: acc {rows[-1]['final_accuracy']:.2%} "
              f"AAA {rows[-1]['average_incremental_accuracy']:.2%} forgetting {rows[-1]['forgetting']:.2%} "
              f"{rows[-1]['seconds']:.0f}s{' (reused)' if reused else ''}", flush=True)
    parquet = out_dir / f"study-{'-'.join(semantics_list)}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    plot_curves(rows, out_dir / "study-curves.png")
    (out_dir / "study.md").write_text(markdown_table(rows) + "\n")
    tracking.log_table(tracking_uri or tracking.default_tracking_uri(Path.cwd()), "slora-study", out_dir.name, "study",
                       rows, ("variant", "semantics"), ("final_accuracy", "average_incremental_accuracy", "forgetting"),
                       [out_dir / "study.md", parquet, out_dir / "study-curves.png"])
    print(markdown_table(rows))
    print(f"study wall time {time.perf_counter() - started:.0f}s; curves: {out_dir / 'study-curves.png'}")
    return 0


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["semantics"]), []).append(r)
    return groups


def markdown_table(rows: list[dict]) -> str:
    lines = ["| variant | semantics | Acc | AAA | forgetting | stored params | seconds per run |",
             "|---|---|---|---|---|---|---|"]
    for (variant, semantics), group in _groups(rows).items():
        cells = markdown_cells(group, ("final_accuracy", "average_incremental_accuracy", "forgetting"))
        lines.append(f"| {variant} | {semantics} | {' | '.join(cells)} | "
                     f"{statistics.mean(g['stored_parameters'] for g in group):,.0f} | "
                     f"{statistics.mean(g['seconds'] for g in group):.0f} |")
    return "\n".join(lines)


def plot_curves(rows: list[dict], path: Path) -> None:
    """Mean test accuracy after each stage, one panel per semantics, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(rows)
    semantics = sorted({s for _, s in groups})
    fig, axes = plt.subplots(1, len(semantics), figsize=(5.5 * len(semantics), 4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], semantics):
        for (variant, s), group in groups.items():
            if s != name:
                continue
            curves = [g["curve"] for g in group]
            mean = [100 * statistics.mean(values) for values in zip(*curves)]
            ax.plot(range(1, len(mean) + 1), mean, marker="o", label=f"{variant} ({len(curves)} seeds)")
        ax.set_title(f"semantics={name}")
        ax.set_xlabel("stage (task)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("test accuracy on seen classes (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
