"""The sweep's own MLflow run as a summary a researcher reads first: a description with the best trial's link, the
trial counts and best scores as metrics, the search space, the per-variant table and Pareto front (CSV, which the
UI shows as a table), summary.json and one figure of each variant's best trial over the stages."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import yaml

from search_spaces import as_dict

from . import tracking
from .state import SweepRun
from .results import best_per_variant, pareto_front

BEST_SCORES = ("val_accuracy", "test_accuracy", "test_average_incremental_accuracy", "test_forgetting")
FRONT_COLUMNS = ("trial", "variant", "val_accuracy", "test_accuracy", "stored_parameters", "run_id")


def start_description(name: str, variant: str, benchmark: str, num_samples: int, num_stages: int,
                      searched: list[str]) -> str:
    return (f"**Sweep `{name}`**: {num_samples} trials of `{variant}` on `{benchmark}`, {num_stages} stages each, "
            f"searching {', '.join(f'`{k}`' for k in searched) or 'nothing'}; selected on validation accuracy. "
            "Running.")


def space_yaml(params) -> str:
    return yaml.safe_dump(as_dict(params), sort_keys=False)


def summarise_parent(run: SweepRun, table: list[dict], run_statuses: dict[str, str], summary: dict) -> None:
    uri, experiment_id, parent = run.uri, run.target.experiment_id, run.target.parent_run_id
    name, params, num_stages = run.name, run.params, run.num_stages
    finished = [r for r in table if r["status"] == "finished" and r["stage"] == num_stages]
    counts = summary["statuses"]
    per_variant = best_per_variant(table, num_stages)
    best = summary.get("best")
    metrics = {f"trials_{status}": n for status, n in counts.items()}
    if best:
        metrics.update({f"best_{k}": best[k] for k in BEST_SCORES})
    tracking.log_metrics(uri, parent, metrics, step=num_stages)
    c = tracking.client(uri)
    description = [f"**Sweep `{name}`**: {len(run_statuses)} trials ({counts['finished']} finished, "
                   f"{counts['pruned']} pruned by ASHA, {counts['failed']} failed), {num_stages} stages each; "
                   "selected on validation accuracy, reported on test."]
    if best:
        c.set_tag(parent, "slora.best_run_id", best["run_id"])
        c.set_tag(parent, "slora.best_trial", best["trial"])
        description.append(f"\n\nBest: [{best['trial']}](#/experiments/{experiment_id}/runs/{best['run_id']}): "
                           + ", ".join(f"{k.replace('_', ' ')} {best[k]:.2%}" for k in BEST_SCORES) + ".")
    description.append("\n\nRank trials by sorting on `final_val_accuracy`: only trials that ran all "
                       f"{num_stages} stages have it (a stopped trial's last scores are `stopped_val_*`, over fewer "
                       "classes, with tag `slora.stopped_at_stage`). Artifacts: `per_variant.csv`, `pareto_front.csv`, "
                       "`curves.png`, `space.yaml`, `summary.json`, `results.parquet` / `results.csv`.")
    description.append("\n\n" + markdown_table(per_variant))
    c.set_tag(parent, tracking.DESCRIPTION_TAG, "".join(description))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "space.yaml").write_text(space_yaml(params))
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        write_csv(tmp / "per_variant.csv", per_variant)
        write_csv(tmp / "pareto_front.csv", [{k: r.get(k) for k in FRONT_COLUMNS} for r in pareto_front(finished)])
        curves_png(table, per_variant, tmp / "curves.png")
        tracking.log_parent_files(uri, parent, sorted(tmp.iterdir()))


def markdown_table(per_variant: list[dict]) -> str:
    lines = ["| variant | trials | finished | best trial | val acc | test acc | test AAA | test forgetting |",
             "|---|---|---|---|---|---|---|---|"]
    for r in per_variant:
        cells = [f"{r[k]:.2%}" if r[k] is not None else "-" for k in BEST_SCORES]
        lines.append(f"| {r['variant']} | {r['trials']} | {r['finished']} | {r['best_trial'] or '-'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(rows[0]) if rows else ["empty"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()})


def curves_png(table: list[dict], per_variant: list[dict], path: Path) -> None:
    """Each variant's best finished trial: test accuracy, AAA and forgetting after every stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("test_accuracy", "test accuracy"), ("test_average_incremental_accuracy", "test AAA"),
              ("test_forgetting", "test forgetting"))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for r in per_variant:
        rows = sorted((t for t in table if t["trial"] == r["best_trial"]), key=lambda t: t["stage"])
        for ax, (key, _) in zip(axes, panels):
            points = [(t["stage"], t[key]) for t in rows if t.get(key) is not None and t[key] == t[key]]
            if points:
                ax.plot(*zip(*points), marker="o", label=f"{r['variant']} ({r['test_accuracy']:.1%})")
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title)
        ax.set_xlabel("stage")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.grid(alpha=0.3)
    if per_variant and any(r["best_trial"] for r in per_variant):
        axes[0].legend(title="best trial per variant (final test acc)", fontsize=8)
    fig.suptitle("best finished trial per variant, selected on validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
