"""The sweep platform: bad input before Ray, then real Ray Tune/Train sweeps on a local cluster with MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.sweeper.results import best_per_variant, pareto_front
from pipelines.sweeper.options import SweepConfig, parse_sweep_args
from pipelines.sweeper.preflight import prepare
from pipelines.sweeper.resources import TrialResources, plan
from pipelines.sweeper.tuner import changed_inputs, overhead_per_trial, sweep_inputs
from search_spaces import available_spaces, load_space
from slora.config import RESULTS_VERSION, RunConfig
from slora.configure import ConfigError, compose_run, keys_read, leaf_fields
from slora.runner import run_continual

ROOT = Path(__file__).resolve().parents[1]
# Digits in 2-class stages, 20 training images a class, one epoch: the smallest real continual sequence.
SMALL = ["num_tasks=5", "max_train_per_class=20", "max_test_per_class=10", "space.optim.epochs=1"]


def run_sweep_cli(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / "sweep.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# -- bad input: one-line errors before any Ray work ---------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",
    [
        (["variant=slora_xx"], "valid variants"),
        (["variant=slora", "benchmark=nope"], "valid benchmarks"),
        (["variant=slora", "no_such_key=1"], "valid keys"),
        (["variant=slora", "lr_head=0"], "optim.lr_head=0.0: must be > 0"),
        (["variant=slora", "space.rank=[0,4]"], "adapter.rank=0: must be > 0"),
        (["variant=slora", "num_samples=0"], "num_samples=0"),
        (["variant=slora", "objective=best"], "choose one of accuracy, pareto"),
        (["variant=slora", "benchmark=cifar100", "data_root=/nonexistent"], "data_root=/nonexistent: no CIFAR-100"),
        (["variant=slora", "seeds_per_trial=0"], "seeds_per_trial=0: must be >= 1"),
        (["variant=slora", "val_fraction=0"], "val_fraction=0: a sweep selects on a validation split"),
        (["variant=slora", "val_fraction=0.999"], "val_fraction=0.999: class '\\d' has"),
        (["variant=slora", "benchmark=tinyimagenet", "data_root=/nonexistent"],
         "reads either the Tiny-ImageNet release"),
        (["variant=slora", "rank=4,0"], "adapter.rank=0: must be > 0"),  # every grid value checked
        (["variant=slora", "asha_metric=loss"], "asha_metric='loss' is not valid; choose one of "
                                                "projected_accuracy, average_incremental_accuracy, accuracy"),
    ],
)
def test_bad_input_is_rejected_before_ray_starts(args, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        sweep, run_overrides, space_overrides = parse_sweep_args(args)
        prepare(sweep, run_overrides, space_overrides)


def test_cli_prints_one_line_error_and_exit_code_2(tmp_path):
    done = run_sweep_cli(["variant=nope"], tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: unknown variant 'nope'")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_resuming_a_sweep_with_an_edited_space_is_refused_before_mlflow_or_ray(tmp_path):
    out = tmp_path / "runs" / "s"
    out.mkdir(parents=True)
    args = ["variant=l2p", "name=s", f"out_dir={out}", "num_tasks=2"]
    (out / "sweep.json").write_text(json.dumps({"name": "s", **inputs(args)}))
    done = run_sweep_cli([*args, "resume=true", "space.l2p.top_k=[5]"], tmp_path, timeout=120)
    assert done.returncode == 2 and "search space entries (l2p.top_k)" in done.stderr, done.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_unreachable_tracking_server_is_reported_up_front(tmp_path):
    done = run_sweep_cli(["variant=slora", "tracking_uri=http://127.0.0.1:9"], tmp_path, timeout=120)
    assert done.returncode == 2
    assert "tracking_uri=http://127.0.0.1:9 is not reachable" in done.stderr


# -- search spaces ------------------------------------------------------------------------------------------------
def test_every_variant_has_a_space_and_all_searches_the_variant():
    assert {"seq_lora", "slora", "slora_rr", "slora_kd", "slora_pp", "all"} <= set(available_spaces())
    assert "variant" in [p.key for p in load_space("all")]


def test_space_overrides_replace_choices_or_fix_a_value():
    params = {p.key: p for p in load_space("slora", {"rank": "[4,8,16]", "optim.epochs": "2"})}
    assert params["adapter.rank"].kind == "choice" and params["adapter.rank"].args == [4, 8, 16]
    assert params["optim.epochs"].kind == "value" and params["optim.epochs"].args == 2


def test_conditional_parameters_only_sampled_for_their_variants():
    import optuna

    from search_spaces import DefineByRun

    sampler = DefineByRun(load_space("all", {"variant": "seq_lora"}), {})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    sampler(trial)
    assert "adapter.kd_threshold" not in trial.params and "optim.lr_magnitude" not in trial.params
    sampler = DefineByRun(load_space("all", {"variant": "['slora_pp']"}), {})
    trial = study.ask()
    sampler(trial)
    assert "adapter.kd_threshold" in trial.params and "adapter.rank_schedule" in trial.params


def test_the_best_trials_config_shows_only_parameters_its_variant_sampled():
    params = {p.key: p for p in load_space("all")}
    best = {"variant": "slora", "adapter.kd_threshold": "0.0009", "adapter.rank": "8"}  # MLflow params: text
    assert params["adapter.rank"].applies_to(best) and params["optim.lr_magnitude"].applies_to(best)
    assert not params["adapter.kd_threshold"].applies_to(best)
    assert params["adapter.kd_threshold"].applies_to({**best, "variant": "slora_pp"})


def test_local_paths_reach_trials_absolute_and_uris_unchanged(tmp_path, monkeypatch):
    from pipelines.sweeper.options import absolute_paths

    monkeypatch.chdir(tmp_path)
    given = {"data_root": "data/omniglot", "backbone.checkpoint": "local-dir:runs/vit", "cache_dir": "~/c",
             "rank": "8"}
    assert absolute_paths(given) == {"data_root": str(tmp_path / "data" / "omniglot"),
                                     "backbone.checkpoint": f"local-dir:{tmp_path / 'runs' / 'vit'}",
                                     "cache_dir": str(Path("~/c").expanduser()), "rank": "8"}
    uris = {"data_root": "s3://bucket/omniglot", "backbone.checkpoint": "hf-hub:timm/vit_tiny_patch16_224"}
    assert absolute_paths(uris) == uris


def test_resources_are_found_from_the_cluster_and_an_explicit_value_wins():
    # a CPU-only laptop: two single-worker trials side by side on 2 cores, as before auto
    assert plan(SweepConfig(), 2, 0) == TrialResources(2, 0.49, 0.0)
    assert plan(SweepConfig(workers_per_trial=2), 2, 0).concurrent == 1
    # an 8-GPU node: a trial a GPU, the CPUs split over them with one left to Ray's drivers
    node = plan(SweepConfig(num_samples=16), 64, 8)
    assert node == TrialResources(8, 7.0, 1.0) and node.threads == 7
    assert node.describe(64, 8, 1) == "8 GPUs, 64 CPUs: 8 trials at a time, 1 GPU + 7 CPUs each"
    packed = plan(SweepConfig(num_samples=32, trials_per_gpu=4), 64, 8)  # small backbones share a GPU
    assert (packed.concurrent, packed.gpus_per_worker, packed.cpus_per_worker) == (32, 0.25, 1.0)
    assert plan(SweepConfig(gpus_per_worker="0", cpus_per_worker="3"), 64, 8) == TrialResources(21, 3.0, 0.0)
    assert plan(SweepConfig(max_concurrent_trials=2, num_samples=8), 16, 4) == TrialResources(2, 7.0, 1.0)
    with pytest.raises(ConfigError, match="gpus_per_worker=some: give auto or a number"):
        parse_sweep_args(["variant=slora", "gpus_per_worker=some"])
    with pytest.raises(ConfigError, match="trials_per_gpu=0: must be >= 1"):
        parse_sweep_args(["variant=slora", "trials_per_gpu=0"])


def test_overhead_counts_each_slot_that_trials_ran_in_side_by_side():
    # seq_ft's 8-trial sweep here: 1094 s of wall time, two trials at a time, 1163 s of training between them
    assert overhead_per_trial(1094, 1163, 8, 2) == pytest.approx((2 * 1094 - 1163) / 8)  # was -8.6 s, one slot
    assert overhead_per_trial(100, 60, 2, 1) == pytest.approx(20)
    assert overhead_per_trial(100, 60, 1, 4) == pytest.approx(40), "a lone trial fills one slot, not four"


def test_pareto_front_keeps_only_non_dominated_finished_trials():
    rows = [{"trial": "a", "val_accuracy": 0.9, "stored_parameters": 100},
            {"trial": "b", "val_accuracy": 0.8, "stored_parameters": 50},
            {"trial": "c", "val_accuracy": 0.7, "stored_parameters": 80}]
    assert [r["trial"] for r in pareto_front(rows)] == ["a", "b"]


def test_best_per_variant_counts_only_trials_that_finished_every_stage():
    rows = [{"trial": "t1", "variant": "slora", "status": "finished", "stage": 1, "val_accuracy": 0.9},
            {"trial": "t1", "variant": "slora", "status": "finished", "stage": 2, "val_accuracy": 0.5},
            {"trial": "t2", "variant": "slora", "status": "pruned", "stage": 1, "val_accuracy": 0.95},
            {"trial": "t3", "variant": "seq_lora", "status": "pruned", "stage": 1, "val_accuracy": 0.99}]
    seq_lora, slora = best_per_variant(rows, num_stages=2)
    assert (seq_lora["variant"], seq_lora["trials"], seq_lora["finished"]) == ("seq_lora", 1, 0)
    assert seq_lora["val_accuracy"] is None
    assert (slora["trials"], slora["finished"], slora["best_trial"], slora["val_accuracy"]) == (2, 1, "t1", 0.5)


def test_heatmap_shows_each_cells_accuracy_task_labels_and_a_title():
    from pipelines.sweeper.tracking import heatmap_figure

    nan = float("nan")
    fig = heatmap_figure([[0.9, 0.5], [nan, 0.25]], "test accuracy per task after each stage")
    (ax, *_) = fig.axes
    assert [t.get_text() for t in ax.texts] == ["90%", "50%", "25%"]  # no number for a task not yet seen
    assert [t.get_text() for t in ax.get_yticklabels()] == ["task 1", "task 2"] and ax.get_title()


def test_a_trials_name_says_its_method_searched_values_and_id_and_final_metrics_its_last_stage():
    from pipelines.sweeper.endings import final_metrics
    from pipelines.sweeper.trial import run_name

    sampled = {"adapter.normaliser": "product_norm", "optim.lr_direction": 0.0041234, "adapter.rank": 8,
               "variant": "slora_rr"}
    assert run_name("slora_rr", sampled, "9077f05e") == \
        "slora_rr rank=8 lr_direction=0.0041 normaliser=product_norm 9077f05e"
    stages = {1: {"val_accuracy": 0.9, "test_accuracy": 0.8}, 2: {"val_accuracy": 0.5, "test_accuracy": 0.4,
                                                                  "test_forgetting": 0.1}}
    assert final_metrics(stages) == {"stages_done": 2, "final_val_accuracy": 0.5, "final_test_accuracy": 0.4,
                                     "final_test_forgetting": 0.1}
    assert final_metrics({}) == {"stages_done": 0}
    assert final_metrics(stages, 1, completed=False) == {"stages_done": 1, "stopped_val_accuracy": 0.9,
                                                         "stopped_test_accuracy": 0.8}


# -- real sweeps ---------------------------------------------------------------------------------------------------
def mlflow_runs(workdir: Path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("slora-sweep")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("slora.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("slora.kind") == "trial"]
    return client, parents, children


@pytest.mark.slow
def test_a_comma_list_is_a_grid_axis_each_point_with_num_samples_sampled_trials():
    """As Tune's grid_search beside sampled keys: rank=4,8 runs num_samples trials at each rank, the others sampled
    by the same Optuna study (the searcher Tune calls, here without a cluster)."""
    from pipelines.sweeper.searcher import StageAwareOptunaSearch
    from search_spaces import DefineByRun, grid_size

    sweep, run_overrides, space = parse_sweep_args(["variant=slora", "num_samples=3", "rank=4,8", "epochs=2,3"])
    assert "rank" not in run_overrides and space["rank"] == {"grid": [4, 8]} and space["epochs"] == {"grid": [2, 3]}
    params = load_space("slora", space)
    assert grid_size(params) == 4
    searcher = StageAwareOptunaSearch(space=DefineByRun(params, {"variant": "slora"}), metric="val_accuracy",
                                      mode="max", seed=0, max_t=2)
    configs = [searcher.suggest(f"t{i}") for i in range(3 * grid_size(params))]
    points = [(c["adapter.rank"], c["optim.epochs"]) for c in configs]
    assert points[:4] == [(4, 2), (4, 3), (8, 2), (8, 3)] and points[4:8] == points[:4]
    assert all(points.count(p) == 3 for p in set(points))
    assert len({c["optim.lr_direction"] for c in configs}) == len(configs)  # still sampled, per trial
    assert prepare(sweep, run_overrides, space)[1] == params


def test_sweep_two_trials_two_stages_two_workers(tmp_path):
    """Two DDP workers per trial, one trial at a time. TPE seed 7 samples a first-task learning-rate scale of 1
    first and 1e-6 second (a first task that cannot learn), so ASHA keeps the first trial and stops the second after
    stage 1; the MLflow store is then checked as a researcher reads it in the UI."""
    done = run_sweep_cli(["variant=slora", "num_samples=2", "workers_per_trial=2", "num_tasks=2", *SMALL[1:3],
                          "space.optim.epochs=3", "name=e2e", "save_merged=every", "search_seed=7",
                          "space.optim.first_task_lr_scale=[1.0,1e-6]"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    for child in children:
        assert "adapter.rank" in child.data.params and "data.benchmark" in child.data.params
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        steps = [m.step for m in history]
        assert len(steps) == len(set(steps)), "one metric value per stage"
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"accuracy_matrix.png", "accuracy_matrix.csv", "classes.json"} <= artifacts
        # readable: method, searched values and a short id in the name; the searched keys tagged; resolved params
        searched = child.data.tags["slora.searched"].split(",")
        assert "optim.first_task_lr_scale" in searched and "adapter.rank" in searched
        assert child.info.run_name.startswith("slora ") and f"rank={child.data.params['adapter.rank']}" in \
            child.info.run_name and child.info.run_name.endswith(child.data.tags["ray_trial_id"])
        params = child.data.params
        assert (params["data.num_tasks"], params["data.task_sizes"], params["data.image_size"]) == ("2", "5,5", "8")
        assert params["save_merged"] == "every" and params["device"] == "cpu"
        assert params["adapter.ranks_used"] == f"{params['adapter.rank']},{params['adapter.rank']}"
        # last scores on every trial, whichever way it ended, named for how it ended, and the stage they come from
        assert child.info.status == "FINISHED" and "slora.error" not in child.data.tags
        ended = "final" if child.data.tags["slora.status"] == "finished" else "stopped"
        assert {f"{ended}_val_accuracy", f"{ended}_test_accuracy", f"{ended}_test_average_incremental_accuracy",
                f"{ended}_test_forgetting", "stages_done"} <= set(child.data.metrics)
    children = {c.data.tags["slora.status"]: c for c in children}
    assert set(children) == {"finished", "pruned"}, "ASHA stopped the trial whose head could not learn"
    finished, pruned = children["finished"], children["pruned"]
    assert float(pruned.data.params["optim.first_task_lr_scale"]) == 1e-6
    assert (pruned.info.status, pruned.data.tags["slora.stopped_at_stage"]) == ("FINISHED", "1")
    assert (pruned.data.metrics["stages_done"], finished.data.metrics["stages_done"]) == (1, 2)
    assert not any(k.startswith("final_") for k in pruned.data.metrics)  # its 2-class stage 1 never outranks the pick
    ranked = client.search_runs([parents[0].info.experiment_id], "tags.`slora.kind` = 'trial'",
                                order_by=["metrics.final_val_accuracy DESC"])
    assert ranked[0].info.run_id == finished.info.run_id == parents[0].data.tags["slora.best_run_id"]
    assert finished.data.metrics["final_test_accuracy"] == \
        client.get_metric_history(finished.info.run_id, "test_accuracy")[-1].value
    stage_dirs = {a.path for a in client.list_artifacts(finished.info.run_id, "merged")}
    assert stage_dirs == {"merged/stage_01", "merged/stage_02"}
    table = pq.read_table(tmp_path / "runs" / "e2e" / "results.parquet").to_pandas()
    assert set(table["stage"]) == {1, 2} and "adapter.rank" in table.columns
    # the sweep's own run summarises it
    parent = client.get_run(parents[0].info.run_id)
    assert parent.data.tags["slora.best_run_id"] == finished.info.run_id
    assert finished.info.run_id in parent.data.tags["mlflow.note.content"]
    assert (parent.data.metrics["trials_finished"], parent.data.metrics["trials_pruned"],
            parent.data.metrics["trials_failed"]) == (1, 1, 0)
    assert parent.data.metrics["best_test_accuracy"] == finished.data.metrics["final_test_accuracy"]
    assert {"space.yaml", "summary.json", "per_variant.csv", "pareto_front.csv", "curves.png",
            "results.parquet", "results.csv"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "optim.first_task_lr_scale" not in parent.data.params, "a searched key's base value is no trial's"
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # the registered model reads without its run
    version = client.get_model_version_by_alias("slora-best", "champion")
    assert version.run_id == finished.info.run_id and finished.info.run_name in version.description
    assert version.tags["method"] == "slora" and version.tags["benchmark"] == "digits"
    assert float(version.tags["final_test_accuracy"]) == pytest.approx(finished.data.metrics["final_test_accuracy"],
                                                                       abs=1e-4)
    from mlflow.models import Model

    assert version.source.endswith("model/stage_02")  # the pyfunc model's MLmodel file has the signature
    signature = Model.load(client.download_artifacts(version.run_id, "model/stage_02/MLmodel", str(tmp_path)))
    signature = signature.signature.to_dict()
    assert "[-1, 1, 8, 8]" in signature["inputs"] and "[-1, 10]" in signature["outputs"]
    assert "mlflow ui --backend-store-uri sqlite:///" in done.stdout
    summary = json.loads((tmp_path / "runs" / "e2e" / "summary.json").read_text())
    assert summary["trials"] == 2 and summary["platform_overhead_per_trial_seconds"] > 0


@pytest.mark.slow
def test_killed_worker_resumes_from_last_finished_stage(tmp_path):
    killed = run_sweep_cli(["variant=slora", "num_samples=1", "scheduler=none", "num_tasks=3", *SMALL[1:],
                            "name=killed", "kill_worker_at_stage=2"], tmp_path)
    assert killed.returncode == 0, killed.stdout[-3000:] + killed.stderr[-3000:]
    client, _, children = mlflow_runs(tmp_path)
    (child,) = children
    history = client.get_metric_history(child.info.run_id, "stage_seconds")
    assert sorted(m.step for m in history) == [1, 2, 3], "stage 1 was not trained again after the kill"
    scores = ("val_accuracy", "test_accuracy", "test_forgetting")
    killed_final = {k: client.get_metric_history(child.info.run_id, k)[-1].value for k in scores}
    # The same trial config and seed, uninterrupted, in this process (one torch thread, as a 0.49-CPU worker).
    logged = {k: v for k, v in child.data.params.items() if k in leaf_fields(RunConfig) and k != "out_dir"}
    params, _ = keys_read(logged, logged["variant"])  # a trial logs every key, also those its method does not read
    clean = run_continual(compose_run({**params, "save_merged": "none", "out_dir": str(tmp_path / "clean")}),
                          log=lambda *_: None)
    assert killed_final == {k: round(clean[f"final_{k}"], 6) for k in scores}  # MLflow holds 6 decimals


@pytest.mark.slow
def test_nan_trial_fails_alone_and_the_sweep_finishes(tmp_path):
    done = run_sweep_cli(["variant=slora", "num_samples=1", "num_tasks=2", *SMALL[1:], "name=nan",
                          "space.optim.lr_head=1e38", "max_failures=0"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client, parents, children = mlflow_runs(tmp_path)
    assert children[0].info.status == "FAILED" and children[0].data.tags["slora.status"] == "failed"
    assert "slora.error" in children[0].data.tags and "stopped_at_stage" not in str(children[0].data.tags)
    assert parents[0].info.status == "FINISHED" and parents[0].data.metrics["trials_failed"] == 1
    assert (tmp_path / "runs" / "nan" / "results.parquet").exists()


@pytest.mark.slow
def test_pareto_sweep_over_all_variants_runs_without_asha_and_prints_its_front(tmp_path):
    done = run_sweep_cli(["variant=all", "objective=pareto", "num_samples=2", "num_tasks=2", *SMALL[1:],
                          "name=pareto", "save_merged=none"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "runs without ASHA" in done.stdout
    _, _, children = mlflow_runs(tmp_path)
    assert [c.data.tags.get("slora.status") for c in children] == ["finished", "finished"]
    table = pq.read_table(tmp_path / "runs" / "pareto" / "results.parquet").to_pylist()
    expected = [r["trial"] for r in pareto_front([r for r in table if r["stage"] == 2])]
    heading = "Pareto front (max val accuracy, min stored parameters; test accuracy alongside):"
    printed = done.stdout.split(heading)[1].splitlines()
    assert [line.split(":")[0].strip() for line in printed[1:1 + len(expected)]] == expected
    assert not any(printed[1 + len(expected)].startswith(f"  {trial}") for trial in {r["trial"] for r in table})
    per_variant = done.stdout.split("best finished trial per variant:")[1].splitlines()[3:3 + 2]
    sampled = sorted({r["variant"] for r in table})
    assert [line.split()[0] for line in per_variant[:len(sampled)]] == sampled


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    import signal
    import time

    common = ["variant=slora", "num_samples=2", "num_tasks=4", *SMALL[1:], "name=resumable", "scheduler=none",
              "max_concurrent_trials=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "sweep.py"), *common], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    try:
        # Interrupt as soon as the first trial has logged all 4 stages: often before Tune has recorded its end, so
        # the resumed sweep restarts it from its last checkpoint with nothing left to train.
        while time.time() < deadline:
            time.sleep(0.5)
            # sweep.json is written once the sweep made the database: reading earlier would race its schema
            if (tmp_path / "runs" / "resumable" / "sweep.json").exists():
                client, _, children = mlflow_runs(tmp_path)
                if any(len(client.get_metric_history(c.info.run_id, "stage_seconds")) == 4 for c in children):
                    break
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    client, _, children = mlflow_runs(tmp_path)
    done_before = {c.info.run_id for c in children
                   if len(client.get_metric_history(c.info.run_id, "stage_seconds")) == 4}
    assert len(done_before) == 1, "the sweep was interrupted after its first trial, before its last"
    summary = json.loads((tmp_path / "runs" / "resumable" / "summary.json").read_text())
    assert summary["complete"] is False, "an interrupted sweep does not pass for a finished one"
    # the counts compare.py reports: the interrupted trial is not counted as ended
    assert summary["statuses"]["finished"] == 1 and summary["statuses"]["pruned"] == 0
    assert summary["statuses"]["interrupted"] == summary["trials"] - 1
    for child in children:  # never "pruned": ASHA did not stop it (and there is no ASHA here)
        assert child.data.tags.get("slora.status") in ("finished", "interrupted")
    again = run_sweep_cli([*common, "resume=true"], tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    client, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "stage_seconds")]
        assert sorted(steps) == [1, 2, 3, 4], "every stage trained exactly once, across the interruption"
        assert child.data.tags.get("slora.status") == "finished" and child.info.status == "FINISHED"
    resumed = json.loads((tmp_path / "runs" / "resumable" / "summary.json").read_text())
    assert resumed["complete"] is True
    assert resumed["platform_overhead_per_trial_seconds"] is None, "this call's wall time against every call's training"


@pytest.mark.slow
def test_a_sweep_refuses_to_start_a_second_ray_instance_on_the_machine(tmp_path):
    """Two local instances leak stopped trials' CPUs (Ray Train's cleaner cannot tell them apart): refused up front."""
    # address="local": a bare ray.init() would join whatever `ray start` left recorded on this machine
    other = subprocess.Popen([sys.executable, "-c", "import ray, sys; ray.init(address='local', "
                              "include_dashboard=False, num_cpus=1); print('up', flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "up"
        done = run_sweep_cli(["variant=slora", "num_samples=1", "num_tasks=2", *SMALL[1:]], tmp_path, timeout=120)
    finally:
        other.communicate("", timeout=60)
    assert done.returncode == 2 and "another Ray instance is running on this machine" in done.stderr
    assert "address=auto" in done.stderr and not (tmp_path / "runs").exists(), "refused before anything was written"


@pytest.mark.slow
def test_a_local_instance_is_the_cluster_the_machines_ray_address_names_while_it_runs(monkeypatch):
    """A cluster gone without `ray stop` (a Slurm job's `ray start --head`, killed with the job) leaves its address
    in the machine's ray_current_cluster. Ray Train's PlacementGroupCleaner resolves "its" cluster there, times out
    and dies, and every trial ASHA stops keeps its CPUs until the sweep hangs: a sweep's own instance must be what
    that lookup finds while it runs, and the record must go with it."""
    import shutil
    import tempfile

    import ray
    from ray._common.utils import get_ray_address_file
    from ray._private.services import canonicalize_bootstrap_address_or_die

    from pipelines.sweeper.tuner import start_ray, stop_ray

    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must fit in 107 characters
    monkeypatch.setenv("RAY_TMPDIR", str(temp))
    record = Path(get_ray_address_file(None))  # under RAY_TMPDIR, where the cleaner looks
    record.parent.mkdir(parents=True)
    record.write_text("127.0.0.1:1")
    try:
        start_ray("")
        try:
            ours = ray.get_runtime_context().gcs_address
            assert canonicalize_bootstrap_address_or_die(None) == ours, "the cleaner's own lookup finds this instance"
        finally:
            stop_ray()
        assert not record.exists(), "no stale record is left behind for the next sweep"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_asha_replay_stops_below_the_rung_quantile_and_counts_stage_epochs():
    from pipelines.bench_asha import grace_stages, replay_asha, setting_row

    def curve(stage1, final):
        return {1: {"val_accuracy": stage1, "optim.epochs": "1"}, 2: {"val_accuracy": final},
                3: {"val_accuracy": final}}

    curves = {"a": curve(0.9, 0.3), "b": curve(0.5, 0.8), "c": curve(0.95, 0.4)}
    # Rungs at stage 1 only (1 * 3 is not below 3 stages). a passes (first there), b is below a and stops although
    # it would have won, c beats the 2/3 quantile of {a, b} and goes on: 7 of 9 stage-epochs, best c.
    saved, best = replay_asha(curves, ["a", "b", "c"], 3, "val_accuracy", grace=1, reduction=3)
    assert best == "c" and saved == pytest.approx(2 / 9)
    # over the sweep: the setting that stopped b lost 0.8 - 0.4 = 40 points in every order that runs b after a or c
    # ranked at stage 1; one whose first rung comes after the last stage never stops anyone and loses nothing
    stopping = setting_row({"s": curves}, "val_accuracy", "1", 3, orders=20)
    assert stopping["worst_as_run"] == pytest.approx(40.0) and stopping["saved"] > 0
    assert setting_row({"s": curves}, "val_accuracy", "3", 3, orders=20)["worst_regret"] == 0.0
    assert grace_stages("old>new", {"s": {1: {"data.task_sizes": "2,2,2,2"}}}, 4) == 3  # 4 old > 2 new at stage 3
    # a sweep's grace_period: whole stages, or a share of the sequence, never below one stage nor past the last
    from pipelines.sweeper.options import grace_stages as sweep_grace

    assert [sweep_grace(g, n) for g, n in ((0.3, 10), (0.3, 5), (2, 5), (0.01, 5), (7, 5))] == [3, 2, 2, 1, 5]


@pytest.mark.slow
def test_compare_sweeps_each_method_selects_on_val_reruns_on_seeds_and_resumes(tmp_path):
    """pipelines/compare.py: each method through its own 2-trial sweep (one Ray instance for all), then a table of
    official and tuned settings over 2 seeds, in Parquet, Markdown and MLflow; run again, it trains nothing and says
    the same. Three methods stand for the kinds compare.py treats apart (one that samples nothing, full fine-tuning,
    a prompt method with method keys); every method's own training is tested in test_learners.py."""
    methods = ["simplecil", "seq_ft", "l2p"]
    args = [str(ROOT / "pipelines" / "compare.py"), f"methods={','.join(methods)}", "num_samples=2", "seeds=2",
            "num_tasks=2", *SMALL[1:3], "scheduler=none", f"out_dir={tmp_path / 'compare'}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for method in methods:
        sweep = pq.read_table(tmp_path / "compare" / "sweeps" / f"compare-{method}" / "results.parquet").to_pandas()
        assert set(sweep["variant"]) == {method} and sweep["trial"].nunique() == 2
        assert set(sweep["stage"]) == {1, 2} and (sweep["status"] == "finished").all()
        assert sweep["val_accuracy"].notna().all() and sweep["test_accuracy"].notna().all()
        # the official settings are the first trial (preset_first): tuned is chosen among them and the sampled ones
        state = json.loads((tmp_path / "compare" / "sweeps" / f"compare-{method}" / "sweep.json").read_text())
        for point in state["first_trials"]:
            assert any(all(str(row[k]) == str(v) for k, v in point.items()) for _, row in sweep.iterrows()), method
    assert sum(bool(json.loads((tmp_path / "compare" / "sweeps" / f"compare-{m}" / "sweep.json").read_text())
                    ["first_trials"]) for m in methods) == len(methods) - 1  # SimpleCIL samples nothing
    table = pq.read_table(tmp_path / "compare" / "compare.parquet").to_pandas()
    assert sorted(table["settings"].unique()) == ["official", "tuned"] and len(table) == 4 * len(methods)
    for method in methods:  # where the official settings won the sweep, their seed runs stand for the tuned row too
        best = json.loads((tmp_path / "compare" / "sweeps" / f"compare-{method}" / "summary.json").read_text())["best"]
        point = (json.loads((tmp_path / "compare" / "sweeps" / f"compare-{method}" / "sweep.json").read_text())
                 ["first_trials"] or [None])[0]
        won = point is not None and all(str(best[k]) == str(v) for k, v in point.items())
        rows = {s: table[(table["method"] == method) & (table["settings"] == s)] for s in ("official", "tuned")}
        assert (tmp_path / "compare" / "runs" / f"{method}-tuned-0").exists() != won, method
        if won:
            assert list(rows["tuned"]["test_accuracy"]) == list(rows["official"]["test_accuracy"])
    assert table["test_accuracy"].between(0, 1).all() and table["val_accuracy"].notna().all()
    assert all(f"| {method} | tuned |" in (tmp_path / "compare" / "compare.md").read_text() for method in methods)
    client, _, _ = mlflow_runs(tmp_path)
    comparisons = [r for r in client.search_runs([client.get_experiment_by_name("slora-sweep").experiment_id])
                   if r.data.tags.get("slora.kind") == "comparison"]
    assert len(comparisons) == 1 and "l2p.tuned.test_accuracy" in comparisons[0].data.metrics
    again = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "sweep compare-" not in again.stdout  # no sweep ran again
    assert again.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]
    edited = subprocess.run([sys.executable, *args, "space.optim.epochs=[4,8,16]"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # refused before any Ray work
    assert edited.returncode == 2 and "sweep compare-" not in edited.stdout, edited.stdout[-2000:]
    # SimpleCIL reads no optimiser key, so the edit is not passed to it (and said); seq_ft's space changed
    assert "simplecil does not read optim.epochs" in edited.stdout
    assert "seq_ft: its sweep" in edited.stderr and "search space entries (optim.epochs)" in edited.stderr


def test_a_registered_models_scores_are_its_own_seeds_and_the_mean_is_named_as_such():
    from pipelines.sweeper.summary import registered_scores

    one = {"val_accuracy": 0.5, "test_accuracy": 0.4, "test_average_incremental_accuracy": 0.6, "test_forgetting": 0.1}
    assert registered_scores(one) == (one, {})
    seeds = {**one, "seed0_val_accuracy": 0.55, "seed0_test_accuracy": 0.45,
             "seed0_test_average_incremental_accuracy": 0.65, "seed0_test_forgetting": 0.05}
    own, means = registered_scores(seeds)
    assert own["test_accuracy"] == 0.45 and means == one


def test_a_sweeps_seed_is_every_trials_training_seed_and_search_seed_the_searchs():
    sweep, run_overrides, _ = parse_sweep_args(["variant=slora", "seed=5", "search_seed=9"])
    assert sweep.search_seed == 9 and compose_run(run_overrides).seed == 5
    assert compose_run(parse_sweep_args(["variant=slora"])[1]).seed == 0


def inputs(args: list[str]) -> dict:
    sweep, run_overrides, space_overrides = parse_sweep_args(args)
    return sweep_inputs(sweep, load_space(sweep.variant, space_overrides), compose_run(run_overrides), run_overrides)


def test_a_sweep_reused_or_resumed_must_have_searched_the_same_space_over_the_same_base():
    recorded = inputs(["variant=l2p", "epochs=2"])
    assert changed_inputs(recorded, inputs(["variant=l2p", "epochs=2"])) == ""
    # made by the code before the current results_version (v2 recorded none): its trials ran other methods' code
    assert changed_inputs({"name": "old"}, recorded) == f"code (results_version 2, now {RESULTS_VERSION})"
    assert changed_inputs({**recorded, "results_version": RESULTS_VERSION - 1}, recorded).startswith("code")
    edited = inputs(["variant=l2p", "epochs=3", "space.l2p.top_k=[5]"])
    assert changed_inputs(recorded, edited) == "search space entries (l2p.top_k) and run settings (epochs)"
    assert "first trials" in changed_inputs(recorded, inputs(["variant=l2p", "epochs=2", "space.optim.epochs=[2]",
                                                            "preset_first=true"]))


def test_preset_first_gives_the_methods_official_values_as_the_first_trial_and_refuses_one_outside_the_space():
    first = inputs(["variant=inflora", "preset_first=true"])["first_trials"]
    assert first == [{"optim.optimizer": "adam", "adapter.rank": 10, "optim.lr_direction": 5e-4,
                      "optim.lr_head": 5e-4, "inflora.threshold_begin": 0.95, "optim.epochs": 8}]
    assert inputs(["variant=simplecil", "preset_first=true"])["first_trials"] == []  # nothing to sample
    with pytest.raises(ConfigError, match=r"preset_first: the base's optim.lr_direction=0.5 is outside the space's "
                                          r"range \[0.0001, 0.03\]"):
        inputs(["variant=inflora", "preset_first=true", "lr_direction=0.5"])
    with pytest.raises(ConfigError, match=r"preset_first: the base's adapter.rank=6 is not among the space's "
                                          r"choices \[4, 8, 10, 16\]"):
        inputs(["variant=inflora", "preset_first=true", "rank=6"])

