"""The sweep's results table (trials x stages, with config columns) from MLflow, written as Parquet."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from slora.config import SPLIT_SCORES

from . import tracking


def results_table(
    uri: str, experiment_id: str, parent: str, num_stages: int, statuses: dict
) -> tuple[list[dict], dict[str, str]]:
    """One row per (trial, stage) from the child runs' full metric histories (Tune keeps only post-restart
    history, MLflow keeps all), and every child run's status: finished / pruned (stopped early by ASHA) / failed,
    as Tune's callback tagged it when Tune ended the trial (callback.py), else as Tune's results say (statuses),
    else interrupted: the sweep stopped before Tune ended the trial (resume=true continues it). A trial that failed
    before its first stage has a status and no row."""
    rows, run_statuses = [], {}
    for run in tracking.child_runs(uri, experiment_id, parent):
        trial_id = run.data.tags.get(tracking.TRIAL_TAG, "")
        stages = tracking.metric_histories(uri, run.info.run_id)
        done = max(stages, default=0)
        status = run.data.tags.get("slora.status") or statuses.get(trial_id) or (
            "finished" if done >= num_stages else "interrupted")
        run_statuses[run.info.run_id] = status
        for stage in sorted(stages):
            rows.append({"trial": run.info.run_name, "trial_id": trial_id, "run_id": run.info.run_id,
                         "status": status, "stage": stage, **stages[stage], **run.data.params})
    return rows, run_statuses


def write_table(rows: list[dict], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = sorted({k for r in rows for k in r}, key=_column_order)
    table = pa.table({c: [_cell(r.get(c)) for r in rows] for c in columns}) if rows else pa.table({})
    parquet = out_dir / "results.parquet"
    pq.write_table(table, parquet)
    csv_path = out_dir / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return [parquet, csv_path]


def pareto_front(rows: list[dict]) -> list[dict]:
    """Finished trials that no other finished trial beats on both val accuracy (max) and stored parameters (min)."""
    def dominated(a, b):
        return (b["val_accuracy"] >= a["val_accuracy"] and b["stored_parameters"] <= a["stored_parameters"]
                and (b["val_accuracy"] > a["val_accuracy"] or b["stored_parameters"] < a["stored_parameters"]))

    front = [a for a in rows if not any(dominated(a, b) for b in rows)]
    return sorted(front, key=lambda r: -r["val_accuracy"])


def best_per_variant(table: list[dict], num_stages: int) -> list[dict]:
    """For a sweep over `all`: each variant's trial counts and the final metrics of its best finished trial, chosen
    on val accuracy (a trial stopped early never counts: its accuracy comes from an earlier, easier stage)."""
    statuses: dict[str, dict[str, str]] = {}
    for r in table:
        statuses.setdefault(str(r.get("variant")), {})[r["trial"]] = r["status"]
    out = []
    for variant, trials in sorted(statuses.items()):
        finished = [r for r in table if str(r.get("variant")) == variant and r["status"] == "finished"
                    and r["stage"] == num_stages]
        best = max(finished, key=lambda r: r["val_accuracy"], default={})
        out.append({"variant": variant, "trials": len(trials),
                    "finished": sum(s == "finished" for s in trials.values()), "best_trial": best.get("trial"),
                    **{k: best.get(k) for k in ("val_accuracy", "test_accuracy", "test_average_incremental_accuracy",
                                                "test_forgetting", "stored_parameters")}})
    return out


VARIANT_COLUMNS = (
    ("variant", "variant", "{:>8}"),
    ("trials", "trials", "{:>6}"),
    ("finished", "finished", "{:>8}"),
    ("val_accuracy", "val acc", "{:>7.2%}"),
    ("test_accuracy", "test acc", "{:>8.2%}"),
    ("test_average_incremental_accuracy", "test AAA", "{:>8.2%}"),
    ("test_forgetting", "forget", "{:>6.2%}"),
    ("stored_parameters", "adapter params", "{:>14,.0f}"),
    ("best_trial", "trial", "{:>21}"),
)


_FIRST = ["trial", "trial_id", "run_id", "status", "stage", *SPLIT_SCORES, *(f"{k}_std" for k in SPLIT_SCORES),
          "stored_parameters", "stage_seconds", "train_loss"]


def _column_order(column: str):
    return (_FIRST.index(column), "") if column in _FIRST else (len(_FIRST), column)


def _cell(value):
    # MLflow params are strings; keep them so, numbers stay numbers. Mixed columns would break Arrow's typing.
    return None if value is None else value if isinstance(value, (int, float)) else str(value)
