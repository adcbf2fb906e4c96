"""MLflow for sweeps: a parent run per sweep, a child run per trial, per-stage metrics logged from rank 0.

Plain MlflowClient calls (no autolog, no Ray callback): one child run per trial across Train restarts, metrics
with step = stage (1-based), and the database and experiment created once in the main process before any
trial starts (concurrent first writers race on sqlite's schema; docs/platform.md §8).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from slora.config import SPLIT_SCORES

# val_/test_ scores, their spread over a trial's seeds (`_std`, seeds_per_trial > 1), and the rest of a stage
STAGE_METRICS = (
    *SPLIT_SCORES, *(f"{score}_std" for score in SPLIT_SCORES), *(f"seed0_{score}" for score in SPLIT_SCORES),
    "stored_parameters", "stage_seconds", "train_loss", "lora_rank", "absorbed",
)
TRIAL_TAG = "ray_trial_id"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # the UI's own key: which overview an experiment opens on
DESCRIPTION_TAG = "mlflow.note.content"  # a run's description in the UI (Markdown)
DIGITS = 6  # metrics are logged rounded: float32 scores otherwise show 16 digits in the UI

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
    """Create (or find) the experiment in the main process; returns its id. Marked as model training (MLflow 3.17's
    UI still opens an experiment by its global GenAI / Model training switch, so the printed link names the runs
    view)."""
    c = client(uri)
    found = c.get_experiment_by_name(name)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = artifact_root.resolve().as_uri() if artifact_root is not None else None
        experiment_id = c.create_experiment(name, artifact_location=location)
    c.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    return experiment_id


def start_parent(uri: str, experiment_id: str, name: str, params: dict, parent_run_id: str = "",
                 description: str = "") -> str:
    c = client(uri)
    if parent_run_id:
        c.update_run(parent_run_id, status="RUNNING")
        return parent_run_id
    run = c.create_run(experiment_id, run_name=name, tags={"slora.kind": "sweep", DESCRIPTION_TAG: description})
    log_params(uri, run.info.run_id, params)
    return run.info.run_id


def log_params(uri: str, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    c = client(uri)
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i : i + 100])


def find_child_run(target: TrackingTarget, trial_id: str) -> str:
    """The run of a Tune trial ('' if it has none yet)."""
    found = client(target.tracking_uri).search_runs(
        [target.experiment_id], filter_string=f"tags.{TRIAL_TAG} = '{trial_id}'", max_results=1
    )
    return found[0].info.run_id if found else ""


def child_run(target: TrackingTarget, trial_id: str, trial_name: str, params: dict, tags: dict) -> str:
    """The trial's child run, created once: a restarted trial driver finds the run it made before."""
    found = find_child_run(target, trial_id)
    if found:
        return found
    run = client(target.tracking_uri).create_run(
        target.experiment_id,
        run_name=trial_name,
        tags={"mlflow.parentRunId": target.parent_run_id, TRIAL_TAG: trial_id, "slora.kind": "trial", **tags},
    )
    log_params(target.tracking_uri, run.info.run_id, params)
    return run.info.run_id


def log_metrics(uri: str, run_id: str, metrics: dict, step: int) -> None:
    """Metrics in one transaction, rounded to DIGITS decimals; NaN (no old classes at stage 1) left out."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, round(float(v), DIGITS), now, step) for k, v in metrics.items() if not math.isnan(float(v))]
    client(uri).log_batch(run_id, metrics=batch)


def log_stage(uri: str, run_id: str, metrics: dict, stage: int, accuracy_matrix: list[list[float]],
              merged_folder: Path | None) -> None:
    """One stage: metrics in one transaction, the accuracy matrix (PNG + CSV), the merged model if given."""
    c = client(uri)
    log_metrics(uri, run_id, {k: metrics[k] for k in STAGE_METRICS if k in metrics}, stage)
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


def heatmap_png(matrix: list[list[float]], path: Path, title: str = "test accuracy per task after each stage"
                ) -> None:
    import matplotlib.pyplot as plt

    fig = heatmap_figure(matrix, title)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def heatmap_figure(matrix: list[list[float]], title: str):
    """Tasks down, stages across, the accuracy written in each cell (up to 20 tasks: beyond, cells are too small)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array(matrix, dtype=float)
    n = len(matrix)
    fig, ax = plt.subplots(figsize=(2.5 + 0.7 * n, 1.5 + 0.5 * n))
    image = ax.imshow(data, vmin=0, vmax=1, cmap="viridis")
    ax.set_title(title)
    ax.set_xlabel("after training stage")
    ax.set_ylabel("evaluated on")
    ax.set_xticks(range(n), [str(k + 1) for k in range(n)])
    ax.set_yticks(range(n), [f"task {j + 1}" for j in range(n)])
    if n <= 20:
        for (j, k), value in np.ndenumerate(data):
            if value == value:
                ax.text(k, j, f"{value:.0%}", ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    return fig


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


def register_best(uri: str, run_id: str, stage: int, model_name: str, description: str, tags: dict,
                  image_shape: tuple[int, int, int], num_classes: int) -> str:
    """Register the best trial's merged model (its stage's artifact folder) as an MLflow pyfunc model
    (slora/pyfunc_model.py: float32 images in, one logit per class out, or class names) with a description, tags, a
    signature, an input example and its requirements; -> the version. The model folder is logged beside the merged
    weights it wraps (``model/stage_XX``), so ``mlflow.pyfunc.load_model("models:/NAME@champion")`` and
    ``mlflow models serve`` load it."""
    c = client(uri)
    try:
        c.create_registered_model(model_name, description="The best finished trial of each slora-sweep sweep, "
                                  "selected on validation accuracy; the alias `champion` is the latest.")
    except Exception:  # already registered by an earlier sweep: add a version to it
        pass
    folder, model_folder = f"merged/stage_{stage:02d}", f"model/stage_{stage:02d}"
    files = {Path(a.path).name for a in c.list_artifacts(run_id, folder)}
    with tempfile.TemporaryDirectory() as tmp:
        weights = c.download_artifacts(run_id, folder, tmp)
        save_pyfunc(Path(tmp) / "model", weights, image_shape, num_classes)
        c.log_artifacts(run_id, str(Path(tmp) / "model"), artifact_path=model_folder)
    fmt = ("mlflow pyfunc (mlflow.pyfunc.load_model); the weights: a timm local-dir (config.json + model.safetensors)"
           if "config.json" in files else
           "mlflow pyfunc (mlflow.pyfunc.load_model); the weights: prompts.safetensors + slora.json on the run's "
           "backbone (slora.learners.load_exported)")
    source = f"{c.get_run(run_id).info.artifact_uri}/{model_folder}"
    version = c.create_model_version(model_name, source=source, run_id=run_id, description=description,
                                     tags={"format": fmt, **{k: str(v) for k, v in tags.items()}})
    c.set_registered_model_alias(model_name, "champion", version.version)
    return version.version


def save_pyfunc(path: Path, weights: str, image_shape: tuple[int, int, int], num_classes: int) -> None:
    """A pyfunc model folder around a stage folder: slora/pyfunc_model.py as its code, the slora package beside it,
    the run's requirements (the project's dependencies, without the sweep platform's)."""
    from importlib import metadata

    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    import slora
    from slora.serving import WEIGHTS

    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *image_shape), "images")]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes), "logits")]),
                               params=ParamSchema([ParamSpec("output", "string", "logits")]))
    from packaging.requirements import Requirement

    platform = {"ray", "optuna", "mlflow", "pyarrow", "matplotlib", "scikit-learn", "psutil"}  # sweeps only
    requirements = [r for r in metadata.requires("slora-sweep") or []
                    if Requirement(r).marker is None and Requirement(r).name not in platform]
    package = Path(slora.__file__).parent
    mlflow.pyfunc.save_model(path=str(path), python_model=str(package / "pyfunc_model.py"),
                             artifacts={WEIGHTS: weights},
                             code_paths=[str(package)], signature=signature,
                             input_example=np.zeros((1, *image_shape), dtype=np.float32),
                             pip_requirements=requirements)


def log_parent_files(uri: str, run_id: str, files: list[Path]) -> None:
    c = client(uri)
    for f in files:
        c.log_artifact(run_id, str(f))


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (0 for one seed): the cells of every table and its MLflow run."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def log_table(uri: str, experiment: str, run_name: str, kind: str, rows: list[dict], labels: tuple[str, ...],
              scores: tuple[str, ...], files: list[Path]) -> str:
    """A comparison as one MLflow run (tag slora.kind=kind), and the table files as its artifacts. Per row group
    (its labels' values) and score: ``<labels...>.<score>`` is the mean over its seeds and ``.std`` their sample
    spread (the numbers the table shows: MLflow's runs view shows a metric's last step, which would be one seed's),
    ``.per_seed`` each seed's score at step = its seed. Returns the run id."""
    experiment_id = prepare_experiment(uri, experiment, None)
    c = client(uri)
    run = c.create_run(experiment_id, run_name=run_name, tags={"slora.kind": kind})
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(".".join(str(row[label]) for label in labels), []).append(row)
    for prefix, group in groups.items():
        for score in scores:
            mean, spread = mean_and_spread([float(row[score]) for row in group])
            c.log_metric(run.info.run_id, f"{prefix}.{score}", mean)
            c.log_metric(run.info.run_id, f"{prefix}.{score}.std", spread)
            for row in group:
                c.log_metric(run.info.run_id, f"{prefix}.{score}.per_seed", float(row[score]),
                             step=int(row.get("seed", 0)))
    for f in files:
        c.log_artifact(run.info.run_id, str(f))
    c.set_terminated(run.info.run_id)
    return run.info.run_id
