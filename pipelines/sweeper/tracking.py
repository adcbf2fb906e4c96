"""MLflow for sweeps: a parent run per sweep, a child run per trial, per-stage metrics logged from rank 0.

Plain MlflowClient calls (no autolog, no Ray callback): one child run per trial across Train restarts, metrics
with step = stage (1-based), and the database and experiment created once in the main process before any
trial starts (concurrent first writers race on sqlite's schema; docs/platform.md §8).
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from slora.config import SPLIT_SCORES

# val_/test_ scores, their spread over a trial's seeds (`_std`, seeds_per_trial > 1), and the rest of a stage
STAGE_METRICS = (
    *SPLIT_SCORES, *(f"{score}_std" for score in SPLIT_SCORES),
    "stored_parameters", "stage_seconds", "train_loss", "lora_rank", "absorbed",
)
TRIAL_TAG = "ray_trial_id"


@dataclass
class TrackingTarget:
    """Where a trial logs: plain strings, so it travels to Ray workers."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def default_tracking_uri(workdir: Path) -> str:
    # Absolute: Ray changes the working directory of trials and workers.
    return f"sqlite:///{(workdir / 'mlflow.db').resolve()}"


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """An unreachable tracking server is reported before Ray starts, with the URI named."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).read()
    except Exception as err:  # any failure to connect is the same message to the user
        raise ConnectionError(f"tracking_uri={uri} is not reachable ({err}); start the server or fix the URI") from None


def prepare_experiment(uri: str, name: str, artifact_root: Path | None) -> str:
    """Create (or find) the experiment in the main process; returns its id."""
    c = client(uri)
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = artifact_root.resolve().as_uri() if artifact_root is not None else None
    return c.create_experiment(name, artifact_location=location)


def start_parent(uri: str, experiment_id: str, name: str, params: dict, parent_run_id: str = "") -> str:
    c = client(uri)
    if parent_run_id:
        c.update_run(parent_run_id, status="RUNNING")
        return parent_run_id
    run = c.create_run(experiment_id, run_name=name, tags={"slora.kind": "sweep"})
    log_params(uri, run.info.run_id, params)
    return run.info.run_id


def log_params(uri: str, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    c = client(uri)
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i : i + 100])


def child_run(target: TrackingTarget, trial_id: str, trial_name: str, params: dict) -> str:
    """The trial's child run, created once: a restarted trial driver finds the run it made before."""
    c = client(target.tracking_uri)
    found = c.search_runs(
        [target.experiment_id], filter_string=f"tags.{TRIAL_TAG} = '{trial_id}'", max_results=1
    )
    if found:
        return found[0].info.run_id
    run = c.create_run(
        target.experiment_id,
        run_name=trial_name,
        tags={"mlflow.parentRunId": target.parent_run_id, TRIAL_TAG: trial_id, "slora.kind": "trial"},
    )
    log_params(target.tracking_uri, run.info.run_id, params)
    return run.info.run_id


def log_stage(uri: str, run_id: str, metrics: dict, stage: int, accuracy_matrix: list[list[float]],
              merged_folder: Path | None) -> None:
    """One stage: metrics in one transaction, the accuracy matrix (PNG + CSV), the merged model if given."""
    from mlflow.entities import Metric

    c = client(uri)
    now = int(time.time() * 1000)
    batch = [Metric(k, float(metrics[k]), now, stage) for k in STAGE_METRICS
             if k in metrics and not math.isnan(float(metrics[k]))]
    c.log_batch(run_id, metrics=batch)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "accuracy_matrix.csv").write_text(matrix_csv(accuracy_matrix))
        heatmap_png(accuracy_matrix, tmp / "accuracy_matrix.png")
        c.log_artifact(run_id, str(tmp / "accuracy_matrix.csv"))
        c.log_artifact(run_id, str(tmp / "accuracy_matrix.png"))
    if merged_folder is not None:
        c.log_artifacts(run_id, str(merged_folder), artifact_path=f"merged/stage_{stage:02d}")


def log_dict(uri: str, run_id: str, value: dict, name: str) -> None:
    client(uri).log_dict(run_id, value, name)


def matrix_csv(matrix: list[list[float]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["task"] + [f"after_stage_{k + 1}" for k in range(len(matrix))])
    for j, row in enumerate(matrix):
        writer.writerow([j + 1] + ["" if math.isnan(v) else f"{v:.6f}" for v in row])
    return out.getvalue()


def heatmap_png(matrix: list[list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(matrix), 1 + 0.5 * len(matrix)))
    image = ax.imshow(data, vmin=0, vmax=1, cmap="viridis")
    ax.set_xlabel("after stage")
    ax.set_ylabel("task")
    ax.set_xticks(range(len(matrix)), [str(k + 1) for k in range(len(matrix))])
    ax.set_yticks(range(len(matrix)), [str(j + 1) for j in range(len(matrix))])
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def set_status(uri: str, run_id: str, status: str, tags: dict | None = None) -> None:
    c = client(uri)
    for k, v in (tags or {}).items():
        c.set_tag(run_id, k, str(v))
    c.set_terminated(run_id, status=status)


def child_runs(uri: str, experiment_id: str, parent_run_id: str) -> list:
    return client(uri).search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000
    )


def metric_histories(uri: str, run_id: str) -> dict[int, dict[str, float]]:
    """{stage: {metric: value}} from a child run (the full history, across trial restarts)."""
    c = client(uri)
    stages: dict[int, dict[str, float]] = {}
    for key in STAGE_METRICS:
        for m in c.get_metric_history(run_id, key):
            stages.setdefault(m.step, {})[key] = m.value
    return stages


def register_best(uri: str, run_id: str, stage: int, model_name: str) -> str:
    """Register the best trial's merged model (a timm folder artifact) in the model registry; returns version."""
    c = client(uri)
    try:
        c.create_registered_model(model_name)
    except Exception:  # already registered by an earlier sweep: add a version to it
        pass
    source = f"{c.get_run(run_id).info.artifact_uri}/merged/stage_{stage:02d}"
    version = c.create_model_version(model_name, source=source, run_id=run_id,
                                     tags={"format": "timm local-dir (config.json + model.safetensors)"})
    c.set_registered_model_alias(model_name, "champion", version.version)
    return version.version


def log_parent_files(uri: str, run_id: str, files: list[Path]) -> None:
    c = client(uri)
    for f in files:
        c.log_artifact(run_id, str(f))


def log_table(uri: str, experiment: str, run_name: str, kind: str, rows: list[dict], labels: tuple[str, ...],
              scores: tuple[str, ...], files: list[Path]) -> str:
    """A comparison as one MLflow run (tag slora.kind=kind): each row's scores as metrics named
    ``<labels...>.<score>`` at step = its seed, and the table files as artifacts. Returns the run id."""
    experiment_id = prepare_experiment(uri, experiment, None)
    c = client(uri)
    run = c.create_run(experiment_id, run_name=run_name, tags={"slora.kind": kind})
    for row in rows:
        prefix = ".".join(str(row[label]) for label in labels)
        for score in scores:
            c.log_metric(run.info.run_id, f"{prefix}.{score}", row[score], step=int(row.get("seed", 0)))
    for f in files:
        c.log_artifact(run.info.run_id, str(f))
    c.set_terminated(run.info.run_id)
    return run.info.run_id
