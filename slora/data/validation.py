"""The validation split: images held out of each class's training set, so sweeps never select on test data."""

from __future__ import annotations

import math

import torch

from .benchmark import Benchmark

# The hold-out of a class is drawn from this seed and the class's original id, never from its position in the
# class order: every run, seed and trial of a study then holds out the same images.
SPLIT_SEED = 20250


def hold_out_validation(bench: Benchmark, fraction: float) -> Benchmark:
    """Move round(fraction x n) of each class's n training images into the validation split (stratified)."""
    to_val = torch.zeros_like(bench.train_labels, dtype=torch.bool)
    for label in bench.train_labels.unique().tolist():
        members = (bench.train_labels == label).nonzero().flatten()
        count = math.floor(fraction * len(members) + 0.5)
        if not 0 < count < len(members):
            original = bench.class_order[label]
            raise ValueError(
                f"val_fraction={fraction}: class {bench.class_names[original]!r} has {len(members)} training "
                f"images, which leaves {len(members) - count} for training and {count} for validation; every class "
                f"needs at least one of each (choose val_fraction in "
                f"[{0.5 / len(members):.3g}, {1 - 0.5 / len(members):.3g}) for this benchmark)")
        generator = torch.Generator().manual_seed(SPLIT_SEED * 100_003 + bench.class_order[label])
        to_val[members[torch.randperm(len(members), generator=generator)[:count]]] = True
    return Benchmark(**{
        **bench.__dict__,
        "train_images": bench.train_images[~to_val], "train_labels": bench.train_labels[~to_val],
        "val_images": bench.train_images[to_val], "val_labels": bench.train_labels[to_val],
    })
