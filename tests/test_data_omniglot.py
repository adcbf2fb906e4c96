"""benchmark=omniglot and omniglot_background on the real shared npz files (skipped where they are absent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slora.config import DataConfig
from slora.data import load_benchmark
from slora.data.omniglot import DEFAULT_ROOT

pytestmark = pytest.mark.skipif(not (DEFAULT_ROOT / "images_evaluation.npz").is_file(),
                                reason=f"no omniglot npz files in {DEFAULT_ROOT}")


@pytest.fixture(scope="module")
def omniglot(tmp_path_factory):
    return load_benchmark(DataConfig(benchmark="omniglot", cache_dir=str(tmp_path_factory.mktemp("cache"))))


def test_100_evaluation_characters_in_10_tasks_of_10(omniglot):
    assert omniglot.task_sizes == [10] * 10
    assert len(omniglot.class_names) == 100


def test_class_order_is_the_1993_permutation(omniglot):
    np.random.seed(1993)
    assert omniglot.class_order == np.random.permutation(100).tolist()


def test_drawers_1_to_15_train_and_16_to_20_test_at_28px(omniglot):
    assert tuple(omniglot.train_images.shape) == (1500, 1, 28, 28)
    assert tuple(omniglot.test_images.shape) == (500, 1, 28, 28)
    assert omniglot.train_images.dtype == torch.uint8
    assert (torch.bincount(omniglot.test_labels) == 5).all()


def test_ink_is_bright_on_a_dark_background(omniglot):
    image = omniglot.train_images[0, 0].float()
    assert image.max() > 200
    assert image.median() == 0  # most of a drawing is paper


def test_the_background_set_is_all_964_characters_as_one_task(tmp_path):
    bench = load_benchmark(DataConfig(benchmark="omniglot_background", cache_dir=str(tmp_path), image_size=14))
    assert bench.task_sizes == [964]
    assert tuple(bench.train_images.shape) == (964 * 15, 1, 14, 14)


def test_a_folder_without_the_npz_names_the_missing_file(tmp_path):
    with pytest.raises(ValueError, match="images_evaluation.npz: missing"):
        load_benchmark(DataConfig(benchmark="omniglot", data_root=str(tmp_path)))
