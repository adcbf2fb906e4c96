"""Sweeps select on validation data only: one small real sweep pair (local Ray, MLflow) shared by these tests.

The two sweeps differ only in their test labels, shuffled in the second (every test image filed under another
class), with the same TPE seed, one trial at a time and no early stopping: selection must not notice.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from test_sweep import mlflow_runs, run_sweep_cli

CLASSES = ("a", "b", "c", "d")
COMMON = ["variant=slora", "benchmark=imagefolder", "num_tasks=2", "image_size=8", "num_samples=2",
          "scheduler=none", "max_concurrent_trials=1", "seeds_per_trial=2", "space.optim.epochs=2", "search_seed=3",
          "optimizer=adam", "batch_size=16", "lr_head=3e-3",
          "save_merged=none"]


def write_tree(root, shuffled_test: bool):
    """Noisy images around one colour per class; with shuffled_test, class k's test images are filed as k+1's."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(len(CLASSES), 3))
    for split, count in (("train", 30), ("test", 8)):
        for k, name in enumerate(CLASSES):
            label = CLASSES[(k + 1) % len(CLASSES)] if split == "test" and shuffled_test else name
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(colours[k] + rng.normal(0, 40, size=(8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}{i}.png")
    return root


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    out = {}
    for kind in ("plain", "shuffled"):
        work = tmp_path_factory.mktemp(kind)
        data = write_tree(work / "data", shuffled_test=kind == "shuffled")
        done = run_sweep_cli([*COMMON, f"data_root={data}", f"cache_dir={work / 'cache'}", f"name={kind}"], work)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        table = pq.read_table(work / "runs" / kind / "results.parquet").to_pylist()
        summary = json.loads((work / "runs" / kind / "summary.json").read_text())
        out[kind] = {"work": work, "stdout": done.stdout, "table": table, "summary": summary}
    return out


def finals(sweep) -> dict[str, dict]:
    return {r["trial"]: r for r in sweep["table"] if r["stage"] == 2}


@pytest.mark.slow
def test_shuffled_test_labels_select_the_same_configuration(sweeps):
    plain, shuffled = sweeps["plain"]["summary"]["best"], sweeps["shuffled"]["summary"]["best"]
    searched = [k for k in plain if k.startswith(("optim.lr", "adapter.rank"))]
    assert searched and {k: plain[k] for k in searched} == {k: shuffled[k] for k in searched}
    assert plain["val_accuracy"] == shuffled["val_accuracy"]
    assert plain["test_accuracy"] != shuffled["test_accuracy"], "the shuffle must change what test data says"


@pytest.mark.slow
def test_the_selected_trial_is_the_best_on_validation_and_reports_its_own_test_scores(sweeps):
    for sweep in sweeps.values():
        rows = finals(sweep)
        best = sweep["summary"]["best"]
        assert best["trial"] == max(rows.values(), key=lambda r: r["val_accuracy"])["trial"]
        assert best["test_accuracy"] == rows[best["trial"]]["test_accuracy"]
        assert "selected on validation" in sweep["stdout"] and f"its test accuracy {best['test_accuracy']:.2%}" in \
            sweep["stdout"]


@pytest.mark.slow
def test_every_stage_has_val_and_test_scores_with_their_spread_over_seeds(sweeps):
    sweep = sweeps["plain"]
    for row in sweep["table"]:
        for key in ("val_accuracy", "test_accuracy", "val_average_incremental_accuracy", "test_forgetting"):
            assert 0 <= row[key] <= 1 and row[f"{key}_std"] >= 0
    client, _, children = mlflow_runs(sweep["work"])
    for child in children:
        for key in ("val_accuracy", "test_accuracy", "val_accuracy_std", "seed0_val_accuracy"):
            assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == [1, 2]
        assert child.data.params["data.val_fraction"] == "0.1"
    header = next(line for line in sweep["stdout"].splitlines() if line.lstrip().startswith("stage"))
    assert "val acc" in header and "test acc" in header
