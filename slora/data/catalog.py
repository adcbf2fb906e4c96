"""Benchmarks by name; each loader reads local files only."""

from __future__ import annotations

from typing import Callable

import torch

from ..config import DataConfig
from . import digits, omniglot, paper, tinyimagenet
from .benchmark import Benchmark
from .imagefolder import load_imagefolder
from .validation import hold_out_validation
from .views import as_view

BENCHMARKS: dict[str, Callable[[DataConfig], Benchmark]] = {
    "digits": digits.load,
    "imagefolder": load_imagefolder,
    "omniglot": omniglot.loader("omniglot"),
    "omniglot_background": omniglot.loader("omniglot_background"),
    "cifar100": paper.load_cifar100,
    **{name: paper.folder_loader(name) for name in paper.FOLDER_BENCHMARKS},
    "tinyimagenet": tinyimagenet.load,
}
SUBSET_BENCHMARKS = ("tinyimagenet",)  # whose loaders read DataConfig.classes


def load_benchmark(cfg: DataConfig) -> Benchmark:
    if cfg.benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {cfg.benchmark!r}; valid benchmarks: {', '.join(sorted(BENCHMARKS))}")
    if cfg.classes and cfg.benchmark not in SUBSET_BENCHMARKS:  # silently training on every class would mislead
        raise ValueError(f"classes={cfg.classes}: benchmark={cfg.benchmark} does not take a class subset; "
                         f"benchmarks that do: {', '.join(SUBSET_BENCHMARKS)}")
    bench = BENCHMARKS[cfg.benchmark](cfg)
    # every split, hold-out, cap and task below is an index over the loader's (memory-mapped) arrays, never a copy
    bench.train_images, bench.test_images = as_view(bench.train_images), as_view(bench.test_images)
    if cfg.augment != "auto":
        bench.augment = cfg.augment
    if cfg.val_fraction > 0:  # before the caps: a quick run holds out what a full one does
        bench = hold_out_validation(bench, cfg.val_fraction)
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
