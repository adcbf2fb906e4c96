"""The validation split, val_/test_ scores and seeds: what model selection may read, and what it may not."""

from __future__ import annotations

import math

import pytest
import torch

from slora.config import DataConfig, RunConfig
from slora.continual import ContinualRun
from slora.data import load_benchmark
from slora.configure import ConfigError, compose_run
from slora.seeds import mean_over_seeds, seed_config


def digits(**fields):
    return load_benchmark(DataConfig(benchmark="digits", **fields))


def rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(image.flatten().tolist()) for image in images}


def test_validation_is_carved_from_train_stratified_disjoint_and_seeded():
    full, split = digits(), digits(val_fraction=0.2)
    assert len(split.train_labels) + len(split.val_labels) == len(full.train_labels)
    for label in range(10):  # stratified: round(0.2 x n) of every class
        n = int((full.train_labels == label).sum())
        assert int((split.val_labels == label).sum()) == math.floor(0.2 * n + 0.5)
    assert not rows(split.val_images) & rows(split.train_images)  # disjoint (digits has no duplicate images)
    assert rows(split.val_images) <= rows(full.train_images) and not rows(split.val_images) & rows(full.test_images)
    again = digits(val_fraction=0.2)
    assert torch.equal(again.val_images, split.val_images) and torch.equal(again.train_images, split.train_images)
    assert torch.equal(split.test_images, full.test_images)


def test_validation_is_taken_before_the_training_cap():
    capped, split = digits(val_fraction=0.2, max_train_per_class=5), digits(val_fraction=0.2)
    assert torch.equal(capped.val_images, split.val_images)
    assert all(int((capped.train_labels == c).sum()) == 5 for c in range(10))


def test_validation_images_do_not_depend_on_the_class_order():
    from slora.data.benchmark import Benchmark
    from slora.data.validation import hold_out_validation

    bench = digits()
    reversed_order = Benchmark(**{**bench.__dict__, "class_order": bench.class_order[::-1],
                                  "train_labels": 9 - bench.train_labels, "test_labels": 9 - bench.test_labels})

    def held_out(b):
        split = hold_out_validation(b, 0.2)
        return {b.class_order[label]: rows(split.val_images[split.val_labels == label]) for label in range(10)}

    assert held_out(bench) == held_out(reversed_order)


@pytest.mark.parametrize("fraction", [0.001, 0.999])
def test_a_validation_size_that_empties_a_split_of_a_class_is_one_line(fraction):
    with pytest.raises(ValueError, match=rf"val_fraction={fraction}: class '\d' has \d+ training images, which "
                                         r"leaves \d+ for training and \d+ for validation"):
        digits(val_fraction=fraction)


@pytest.mark.parametrize("fraction", ["1", "-0.1", "1.5"])
def test_a_validation_fraction_outside_0_1_is_rejected(fraction):
    with pytest.raises(ConfigError, match=r"data.val_fraction=.*: must lie in \[0, 1\)"):
        compose_run([f"val_fraction={fraction}"])


def test_run_reports_a_bad_validation_size_before_training(tmp_path, capsys):
    from pipelines.run import main as run

    assert run(["val_fraction=0.999", f"out_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: val_fraction=0.999: class") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def quick(**overrides) -> RunConfig:
    return compose_run({"num_tasks": "2", "epochs": "1", "max_train_per_class": "8", "max_test_per_class": "6",
                         "progress": "false", "device": "cpu", **overrides})


def test_every_stage_scores_both_splits_only_when_there_is_a_validation_split():
    cfg = quick(val_fraction="0.2")
    result = ContinualRun(cfg, load_benchmark(cfg.data)).run_stage()
    assert {"val_accuracy", "val_forgetting", "val_average_incremental_accuracy", "test_accuracy",
            "test_accuracy_new"} <= result.metrics().keys()
    no_val = quick()
    plain = ContinualRun(no_val, load_benchmark(no_val.data)).run_stage()
    assert not any(k.startswith("val_") for k in plain.metrics())


def test_seed_s_shifts_the_training_seed_and_the_class_order():
    cfg = quick()
    second = seed_config(cfg, 1, order_seed=1993)
    assert (second.seed, second.data.class_order_seed) == (cfg.seed + 1, 1994)
    assert seed_config(cfg, 0, order_seed=1993) is cfg
    assert load_benchmark(second.data).class_order != load_benchmark(cfg.data).class_order


def test_mean_over_seeds_gives_means_stds_and_the_summed_cost():
    stages = [{"val_accuracy": 0.5, "test_accuracy": 0.4, "stage_seconds": 2.0, "lora_rank": 10.0},
              {"val_accuracy": 0.7, "test_accuracy": 0.6, "stage_seconds": 3.0, "lora_rank": 10.0}]
    out = mean_over_seeds(stages)
    assert out["val_accuracy"] == pytest.approx(0.6) and out["val_accuracy_std"] == pytest.approx(0.1414, abs=1e-4)
    assert out["stage_seconds"] == 5.0 and out["lora_rank"] == 10.0 and "lora_rank_std" not in out
    assert (out["seed0_val_accuracy"], out["seed0_test_accuracy"]) == (0.5, 0.4)  # seed 0's model's own scores
    assert mean_over_seeds(stages[:1]) == stages[0]
    nan = mean_over_seeds([{"test_accuracy_old": math.nan}, {"test_accuracy_old": math.nan}])  # stage 1
    assert math.isnan(nan["test_accuracy_old"]) and math.isnan(nan["test_accuracy_old_std"])
