"""Benchmarks by name; each loader reads local files only."""

from __future__ import annotations

from typing import Callable

import torch

from ..config import DataConfig, check_benchmark_name
from . import digits, omniglot, paper
from .benchmark import Benchmark
from .imagefolder import load_imagefolder

BENCHMARKS: dict[str, Callable[[DataConfig], Benchmark]] = {
    "digits": digits.load,
    "imagefolder": load_imagefolder,
    "omniglot": omniglot.loader("omniglot"),
    "omniglot_background": omniglot.loader("omniglot_background"),
    "cifar100": paper.load_cifar100,
    **{name: paper.folder_loader(name) for name in paper.FOLDER_BENCHMARKS},
}


def load_benchmark(cfg: DataConfig) -> Benchmark:
    check_benchmark_name(cfg.benchmark)
    bench = BENCHMARKS[cfg.benchmark](cfg)
    if cfg.augment != "auto":
        bench.augment = cfg.augment
    if cfg.max_train_per_class or cfg.max_test_per_class:
        bench = _cap_per_class(bench, cfg.max_train_per_class, cfg.max_test_per_class)
    return bench


def _first_per_class(labels: torch.Tensor, cap: int) -> torch.Tensor:
    if cap <= 0:
        return torch.ones_like(labels, dtype=torch.bool)
    keep = torch.zeros_like(labels, dtype=torch.bool)
    for label in labels.unique():
        keep[(labels == label).nonzero().flatten()[:cap]] = True
    return keep


def _cap_per_class(bench: Benchmark, train_cap: int, test_cap: int) -> Benchmark:
    train = _first_per_class(bench.train_labels, train_cap)
    test = _first_per_class(bench.test_labels, test_cap)
    return Benchmark(**{
        **bench.__dict__,
        "train_images": bench.train_images[train], "train_labels": bench.train_labels[train],
        "test_images": bench.test_images[test], "test_labels": bench.test_labels[test],
    })
