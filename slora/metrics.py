"""Continual-learning metrics as small functions of predictions and of the accuracy matrix (docs/method.md §8).

accuracy_matrix[j][k] is the accuracy on task j's classes after training task k (NaN for j > k). Rows are
indexed by task number, never by string keys, which avoids the official code's string-sorted forgetting bug.
"""

from __future__ import annotations

import math

import torch


def block_accuracies(predictions: torch.Tensor, labels: torch.Tensor, task_sizes: list[int]) -> list[float]:
    """Accuracy on each task's block of classes (NaN for a block with no test sample here)."""
    out, start = [], 0
    for size in task_sizes:
        mask = (labels >= start) & (labels < start + size)
        out.append(float((predictions[mask] == labels[mask]).float().mean()) if mask.any() else math.nan)
        start += size
    return out


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Sample-weighted top-1 over all given samples (the official `total`)."""
    return float((predictions == labels).float().mean()) if labels.numel() else math.nan


def forgetting(matrix: list[list[float]], stage: int) -> float:
    """Mean over earlier tasks j < stage of (best accuracy on j up to `stage`) - (accuracy on j at `stage`)."""
    drops = [max(matrix[j][k] for k in range(j, stage + 1)) - matrix[j][stage] for j in range(stage)]
    return sum(drops) / len(drops) if drops else 0.0


def average_incremental_accuracy(curve: list[float]) -> float:
    """AAA: the mean of the per-stage accuracies on all seen classes."""
    return sum(curve) / len(curve)


def projected_accuracy(curve: list[float], stages: int) -> float:
    """The accuracy after the last of ``stages`` stages if the curve kept its latest slope (clipped to [0, 1]): a
    rung metric for early stopping that does not reward the inflated accuracy of a sequence's first, smallest
    stages, nor a trial that learns fast and forgets fast (pipelines/bench_asha.py measures it)."""
    if len(curve) < 2:
        return curve[-1]
    slope = curve[-1] - curve[-2]
    return min(1.0, max(0.0, curve[-1] + slope * (stages - len(curve))))
