"""Splits, the validation hold-out, caps, tasks and seen-class sets are index arrays over the loader's one array."""

from __future__ import annotations

import torch

from slora.configure import compose_run
from slora.data import load_benchmark
from slora.data.views import ImageView


def test_every_subset_of_a_split_is_a_view_of_the_loaders_array_and_gathers_the_same_images():
    cfg = compose_run(["val_fraction=0.2", "max_train_per_class=30", "max_test_per_class=10"])
    bench = load_benchmark(cfg.data)
    train_base, test_base = bench.train_images.base, bench.test_images.base
    task_images, task_labels = bench.train_split(1)
    seen_val, _ = bench.split_seen("val", 2)
    seen_test, _ = bench.split_seen("test", 2)
    for view, base in ((bench.train_images, train_base), (bench.val_images, train_base), (task_images, train_base),
                       (seen_val, train_base), (seen_test, test_base)):
        assert isinstance(view, ImageView) and view.base.data_ptr() == base.data_ptr()  # no image was copied
    assert len(set(bench.train_images.index.tolist()) & set(bench.val_images.index.tolist())) == 0
    # reading gathers exactly the rows a copy would hold, in the same order
    assert torch.equal(task_images[torch.arange(len(task_images))], train_base[task_images.index])
    assert torch.equal(task_images[2:5], train_base[task_images.index[2:5]])
    assert torch.equal(task_images[3], train_base[int(task_images.index[3])])
    assert task_images.shape == (len(task_labels), *train_base.shape[1:]) and task_images.dtype == torch.uint8
    assert torch.equal(task_images[1, 0], train_base[int(task_images.index[1]), 0])
