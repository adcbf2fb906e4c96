"""The embedded benchmark: scikit-learn's bundled 8x8 digits (no download), 10 classes."""

from __future__ import annotations

import numpy as np
import torch

from ..config import DataConfig
from .benchmark import Benchmark, class_order, remap, split_tasks

DEFAULT_SEED = 1993
TEST_FRACTION = 0.25


def load(cfg: DataConfig) -> Benchmark:
    # Imported here: scikit-learn takes seconds to import, and every other benchmark's workers import this module.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 0..16 ink levels -> uint8 0..255, one channel
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    seed = DEFAULT_SEED if cfg.class_order_seed < 0 else cfg.class_order_seed
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=seed
    )
    order = class_order(10, seed)
    sizes = split_tasks(10, cfg.num_tasks or (0 if cfg.classes_per_task else 5), cfg.classes_per_task)
    return Benchmark(
        name="digits",
        train_images=torch.from_numpy(np.ascontiguousarray(x_train)),
        train_labels=remap(y_train, order),
        test_images=torch.from_numpy(np.ascontiguousarray(x_test)),
        test_labels=remap(y_test, order),
        class_order=order,
        class_names=[str(i) for i in range(10)],
        task_sizes=sizes,
        order_seed=seed,
    )
