"""End to end: pipelines/run.py on the embedded digits, then pipelines/evaluate.py and pipelines/bench.py."""

from __future__ import annotations

import json
import subprocess

import pytest

from pipelines.evaluate import evaluate_checkpoint, run_data_config
from tiny import PYTHON, ROOT

RESULT_KEYS = {"final_test_accuracy", "final_test_average_incremental_accuracy", "final_test_forgetting",
               "test_accuracy_matrix", "class_order", "config", "results_version"}


def run_script(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([PYTHON, f"pipelines/{script}", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_run")
    run_script("run.py", "variant=slora_pp", "benchmark=digits", "epochs=1", "class_order_seed=7", "device=cpu",
               "progress=false", f"out_dir={out}")
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_run_writes_results_with_every_summary_key(digits_run):
    _, results = digits_run
    assert RESULT_KEYS <= results.keys()
    assert len(results["test_accuracy_matrix"]) == 5 and sorted(results["class_order"]) == list(range(10))
    assert results["config"]["variant"] == "slora_pp" and results["config"]["data"]["class_order_seed"] == 7


@pytest.mark.slow
def test_run_saves_a_merged_folder_per_stage(digits_run):
    out, _ = digits_run
    stages = sorted(p.name for p in (out / "merged").iterdir())
    assert stages == [f"stage_{k:02d}" for k in range(1, 6)]
    assert all((out / "merged" / s / "model.safetensors").is_file() for s in stages)


@pytest.mark.slow
def test_evaluate_reproduces_the_final_accuracy_exactly(digits_run):
    out, results = digits_run
    printed = run_script("evaluate.py", f"checkpoint={out / 'merged' / 'stage_05'}", "benchmark=digits", "device=cpu")
    assert json.loads(printed.stdout.strip().splitlines()[-1])["accuracy"] == results["final_test_accuracy"]


@pytest.mark.slow
def test_evaluate_scores_a_prompt_methods_export_as_its_run_did(tmp_path):
    out = tmp_path / "l2p"
    run_script("run.py", "variant=l2p", "num_tasks=2", "epochs=1", "max_train_per_class=20", "save_merged=last",
               "progress=false", f"out_dir={out}")
    results = json.loads((out / "results.json").read_text())
    folder = out / "merged" / "stage_02"
    assert evaluate_checkpoint(folder, run_data_config(folder), "cpu")["accuracy"] == results["final_test_accuracy"]


@pytest.mark.slow
def test_evaluate_reproduces_an_intermediate_stage_with_the_runs_class_order(digits_run):
    out, results = digits_run
    folder = out / "merged" / "stage_03"
    data = run_data_config(folder)
    assert data.class_order_seed == 7
    assert evaluate_checkpoint(folder, data, "cpu")["accuracy"] == results["stages"][2]["test_accuracy"]


@pytest.mark.slow
def test_bench_quick_prints_its_ratios_as_json():
    printed = run_script("bench.py", "quick=true", timeout=300)
    figures = json.loads(printed.stdout.strip().splitlines()[-1])
    for key in ("step_task20_over_task1", "slora_over_lora_step", "merged_over_plain_forward"):
        assert figures[key] > 0


def test_study_reuses_a_finished_run_only_when_its_config_matches(tmp_path, capsys):
    from pipelines.study import main as study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["benchmark=digits", "variants=slora", "seeds=1", "semantics=official", "epochs=1", "num_tasks=2",
            "max_train_per_class=8", "device=cpu", f"tracking_uri={uri}", f"out_dir={tmp_path}"]
    assert study(args) == 0
    results = tmp_path / "slora-official-0" / "results.json"
    written = results.stat().st_mtime_ns
    assert study(args) == 0
    assert "(reused)" in capsys.readouterr().out and results.stat().st_mtime_ns == written
    assert study([*args[:-1], "rank=4", f"out_dir={tmp_path}"]) == 0  # another config: trained again
    assert "(reused)" not in capsys.readouterr().out.splitlines()[0] and results.stat().st_mtime_ns != written
    old = json.loads(results.read_text())
    results.write_text(json.dumps({**old, "results_version": old["results_version"] - 1}))  # an older code's run
    assert study([*args[:-1], "rank=4", f"out_dir={tmp_path}"]) == 0
    assert "(reused)" not in capsys.readouterr().out.splitlines()[0]
    assert (tmp_path / "study-curves.png").stat().st_size > 0
    from mlflow import MlflowClient  # the table is logged too: one run per study invocation, a metric per row

    client = MlflowClient(tracking_uri=uri)
    logged = client.search_runs([client.get_experiment_by_name("slora-study").experiment_id])
    assert len(logged) == 4 and all(r.data.tags["slora.kind"] == "study" for r in logged)
    assert "slora.official.final_accuracy" in logged[0].data.metrics


def test_a_logged_tables_metrics_are_its_means_and_spreads_with_each_seed_in_the_history(tmp_path):
    from mlflow import MlflowClient

    from pipelines.sweeper.tracking import log_table

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rows = [{"method": m, "settings": "tuned", "seed": s, "test_accuracy": acc}
            for m, accs in (("l2p", (0.2, 0.3, 0.4)), ("slora", (0.5, 0.5, 0.5))) for s, acc in enumerate(accs)]
    run_id = log_table(uri, "desk", "comparison-x", "comparison", rows, ("method", "settings"), ("test_accuracy",), [])
    client = MlflowClient(tracking_uri=uri)
    metrics = client.get_run(run_id).data.metrics  # what the runs view shows: the table's cells, not the last seed's
    assert metrics["l2p.tuned.test_accuracy"] == pytest.approx(0.3)
    assert metrics["l2p.tuned.test_accuracy.std"] == pytest.approx(0.1)
    assert metrics["slora.tuned.test_accuracy.std"] == 0.0
    history = client.get_metric_history(run_id, "l2p.tuned.test_accuracy.per_seed")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.2), (1, 0.3), (2, pytest.approx(0.4))]


def test_multirun_runs_the_grid_in_sequence_each_in_its_folder_with_one_table(tmp_path):
    done = run_script("run.py", "-m", "rank=2,4", "seed=range(0,2)", "num_tasks=2", "epochs=1",
                      "max_train_per_class=10", "progress=false", "save_merged=none", f"out_dir={tmp_path}")
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["0-rank=2,seed=0", "1-rank=2,seed=1", "2-rank=4,seed=0", "3-rank=4,seed=1"]
    configs = [json.loads((p / "results.json").read_text())["config"] for p in folders]
    assert [(c["adapter"]["rank"], c["seed"]) for c in configs] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    table = (tmp_path / "multirun.md").read_text().splitlines()
    assert len(table) == 6 and table[2].startswith("| rank=2,seed=0 | ") and "multirun: 4 runs" in done.stdout
    refused = subprocess.run([PYTHON, "pipelines/run.py", "rank=2,4"], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2 and "--multirun" in refused.stderr  # a sweep value without -m: Hydra's own words
