"""Bad input fails before any work with one line that names the value and the valid choices (exit code 2)."""

from __future__ import annotations

import subprocess

import pytest

from slora.configure import ConfigError, compose_run
from slora.learners.slora import SLORA_VARIANTS
from tiny import PYTHON, ROOT

BAD_INPUTS = {
    "unknown_variant": ({"variant": "slora_xx"}, ["slora_xx", *SLORA_VARIANTS]),
    "unknown_benchmark": ({"benchmark": "cifar1000"}, ["cifar1000", "digits"]),
    "unknown_key": ({"learning_rate": "0.1"}, ["learning_rate", "optim.lr_direction"]),
    "zero_rank": ({"rank": "0"}, ["adapter.rank=0", "> 0"]),
    "negative_rank": ({"rank": "-3"}, ["adapter.rank=-3", "> 0"]),
    "zero_lr_direction": ({"lr_direction": "0"}, ["optim.lr_direction=0", "> 0"]),
    "negative_lr_magnitude": ({"lr_magnitude": "-1e-3"}, ["optim.lr_magnitude=-0.001", "> 0"]),
    "zero_lr_head": ({"lr_head": "0.0"}, ["optim.lr_head=0.0", "> 0"]),
    "zero_first_task_lr_scale": ({"first_task_lr_scale": "0"}, ["optim.first_task_lr_scale=0", "> 0"]),
    "missing_checkpoint": ({"backbone.checkpoint": "/nonexistent/vit.safetensors"}, ["/nonexistent/vit.safetensors"]),
    "bad_semantics": ({"semantics": "both"}, ["both", "official", "paper"]),
    "bad_rank_type": ({"rank": "ten"}, ["adapter.rank", "ten"]),
}


@pytest.mark.parametrize("overrides, names", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_value_and_choices(overrides, names):
    with pytest.raises(ConfigError) as caught:
        compose_run(dict(overrides))
    message = str(caught.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_ambiguous_short_key_lists_the_full_keys():
    with pytest.raises(ConfigError, match="optim.epochs"):
        compose_run({"epochs": "1", "first_task_epochs": "1", "nonsense.epochs": "2"})


def test_overrides_are_typed_and_presets_apply():
    cfg = compose_run(["variant=slora_pp", "rank=6", "semantics=paper", "lr_direction=1e-3"])
    assert cfg.adapter.rank == 6 and cfg.adapter.normaliser == "product_norm"
    assert cfg.optim.lr_direction == 1e-3 and cfg.optim.lr_head == 8e-3  # the user's value beats the preset


def test_argument_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        compose_run(["slora"])


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, f"pipelines/{script}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow  # a subprocess: seconds of imports
def test_run_rejects_an_unknown_variant_before_any_work(tmp_path):
    out = tmp_path / "run"
    result = run_script("run.py", "variant=nope", f"out_dir={out}")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "nope" in result.stderr and "slora_pp" in result.stderr
    assert not out.exists()


@pytest.mark.slow  # a subprocess: seconds of imports
def test_run_rejects_a_non_positive_learning_rate(tmp_path):
    result = run_script("run.py", "lr_head=-0.1", f"out_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "optim.lr_head=-0.1" in result.stderr


@pytest.mark.slow  # a subprocess: seconds of imports
def test_evaluate_rejects_a_missing_checkpoint(tmp_path):
    missing = tmp_path / "runs" / "merged" / "stage_05"
    result = run_script("evaluate.py", f"checkpoint={missing}", "benchmark=digits")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and str(missing) in result.stderr


@pytest.mark.slow  # a subprocess: seconds of imports
def test_evaluate_rejects_an_unknown_key(tmp_path):
    result = run_script("evaluate.py", f"checkpoint={tmp_path}", "rank=3")
    assert result.returncode == 2 and "rank" in result.stderr and "class_order_seed" in result.stderr


def test_first_task_lr_scale_changes_only_the_first_tasks_rate():
    """ImageNet-A's official init_lr 1e-2 then lrate 5e-3: lr 5e-3 x2 on task 0 equals lr 1e-2 there, not later."""
    from slora.continual import ContinualRun
    from slora.data import load_benchmark

    common = ["benchmark=digits", "num_tasks=2", "epochs=1", "max_train_per_class=8", "device=cpu", "progress=false"]
    scaled = compose_run([*common, "lr_direction=5e-3", "lr_magnitude=5e-3", "lr_head=5e-3", "first_task_lr_scale=2"])
    plain = compose_run([*common, "lr_direction=1e-2", "lr_magnitude=1e-2", "lr_head=1e-2"])
    assert compose_run(["benchmark=imagenet_a"]).optim.first_task_lr_scale == 2.0
    runs = [ContinualRun(cfg, load_benchmark(cfg.data)) for cfg in (scaled, plain)]
    first = [run.run_stage() for run in runs]
    assert first[0].train_loss == first[1].train_loss and first[0].scores == first[1].scores
    second = [run.run_stage() for run in runs]
    assert second[0].train_loss != second[1].train_loss


def test_run_reports_a_missing_dataset_as_one_line_before_training(tmp_path, capsys):
    from pipelines.run import main as run

    assert run(["benchmark=imagefolder", f"data_root={tmp_path / 'none'}", f"out_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: data_root={tmp_path / 'none'}: no such folder") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_every_benchmark_and_variant_a_config_accepts_has_a_loader_and_a_behaviour():
    from slora.config import group_options
    from slora.data import BENCHMARKS

    assert sorted(BENCHMARKS) == group_options("benchmark")
    from slora.learners import LEARNERS

    assert sorted(LEARNERS) == group_options("variant")


def test_a_trial_driver_validates_its_config_without_importing_torch_or_the_loaders():
    # Every trial driver (and Ray Train's controller, which unpickles the worker function) imports
    # pipelines.sweeper.trial; torch, timm and the loaders there cost seconds per trial on two cores.
    code = ("import sys, pipelines.sweeper.trial as t; t.compose_run({'variant': 'slora_pp', 'benchmark': 'cub'}); "
            "print(sorted(m for m in ('torch', 'timm', 'sklearn', 'slora.data', 'slora.learners.slora.model') "
            "if m in sys.modules))")
    printed = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert printed.strip() == "[]"


@pytest.mark.parametrize("script, expected", [
    ("run", ["adapter.rank=10", "optim.optimizer=sgd   (sgd | adam)",
             "variant=: coda_prompt, dualprompt, inflora, joint, l2p, seq_ft, seq_lora, simplecil, slora,",
             "semantics=: official, paper"]),
    ("sweep", ["scheduler=asha   (asha | none)", "Search spaces (variant=): all,", "data.benchmark=digits"]),
    ("evaluate", ["checkpoint=PATH (required)", "\n  class_order_seed=-1\n"]),
    ("pretrain", ["\n  benchmark=omniglot_background\n", "\n  embed_dim=96\n"]),
])
def test_help_lists_every_key_with_its_default_and_starts_nothing(script, expected, tmp_path, monkeypatch, capsys):
    import importlib

    monkeypatch.chdir(tmp_path)
    assert importlib.import_module(f"pipelines.{script}").main(["--help"]) == 0
    printed = capsys.readouterr().out
    assert all(text in printed for text in expected), printed
    assert list(tmp_path.iterdir()) == []  # no MLflow store, no run folder, no Ray
