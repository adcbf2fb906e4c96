"""Continual-learning metrics on small hand-made accuracy matrices (matrix[task][after stage])."""

import math

import pytest
import torch

from slora.metrics import accuracy, average_incremental_accuracy, block_accuracies, forgetting

NAN = math.nan
# Task 0 peaks at stage 1 (0.9), not at the stage it was learned: forgetting uses the best accuracy so far.
MATRIX = [
    [0.8, 0.9, 0.6],
    [NAN, 0.7, 0.5],
    [NAN, NAN, 0.4],
]


def test_forgetting_is_the_mean_drop_from_the_best_accuracy_so_far():
    assert forgetting(MATRIX, 2) == pytest.approx(((0.9 - 0.6) + (0.7 - 0.5)) / 2)


def test_forgetting_after_the_second_stage_counts_only_the_first_task():
    assert forgetting(MATRIX, 1) == pytest.approx(0.0)  # 0.9 after stage 1 is its best


def test_forgetting_is_zero_after_the_first_stage():
    assert forgetting(MATRIX, 0) == 0.0


def test_forgetting_rows_are_ordered_by_task_number_beyond_ten_tasks():
    """The official code sorted block keys as strings ("10" < "2"); ours indexes tasks by number."""
    n = 12
    matrix = [[1.0 if k == j else (0.5 if k > j else NAN) for k in range(n)] for j in range(n)]
    assert forgetting(matrix, n - 1) == pytest.approx(0.5)


def test_average_incremental_accuracy_is_the_mean_of_the_curve():
    assert average_incremental_accuracy([0.9, 0.7, 0.5]) == pytest.approx(0.7)


def test_accuracy_is_sample_weighted():
    assert accuracy(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])) == pytest.approx(0.75)


def test_block_accuracies_split_by_task_and_mark_empty_blocks_nan():
    predictions, labels = torch.tensor([0, 0, 2, 3]), torch.tensor([0, 1, 2, 2])
    blocks = block_accuracies(predictions, labels, task_sizes=[2, 1, 2])
    assert blocks[:2] == [0.5, 0.5] and math.isnan(blocks[2])


def test_projected_accuracy_extends_the_curves_latest_slope_to_the_last_stage():
    from slora.metrics import projected_accuracy

    assert projected_accuracy([0.9], 5) == 0.9  # one stage: no slope yet
    assert projected_accuracy([0.9, 0.6], 5) == pytest.approx(0.0)  # falls 0.3 a stage: clipped at 0
    assert projected_accuracy([0.5, 0.45, 0.4], 5) == pytest.approx(0.3)
    assert projected_accuracy([0.2, 0.3, 0.4, 0.5, 0.6], 5) == pytest.approx(0.6)  # at the end: the accuracy
