"""benchmark=omniglot and omniglot_background: the protocol on npz files the tests write, then the real shared files
(those tests skip where the shared folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from slora.config import DataConfig
from slora.data import load_benchmark

SHARED = Path(__file__).resolve().parents[1].parent / "shared/data/omniglot"
real_data = pytest.mark.skipif(not (SHARED / "images_evaluation.npz").is_file(),
                               reason=f"no omniglot npz files in {SHARED}")


def write_npz(folder: Path, characters: int = 100, name: str = "images_evaluation.npz", shape=(20, 105, 105)) -> Path:
    """The shared files' layout: bool images, True = paper. Character c, drawer d: an ink square whose side
    grows with the drawer, so the train/test drawer split is visible after downsampling."""
    images = np.ones((characters, *shape), dtype=bool)
    for d in range(shape[0]):
        side = 20 + 3 * d
        images[:, d, 10:10 + side, 10:10 + side] = False
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / name, images=images, labels=np.zeros(images.shape[:2], dtype=np.int64))
    return folder


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = write_npz(tmp_path_factory.mktemp("omniglot"))
    return load_benchmark(DataConfig(benchmark="omniglot", data_root=str(root),
                                     cache_dir=str(tmp_path_factory.mktemp("cache"))))


def test_written_files_give_10_tasks_of_10_in_the_1993_order(written):
    np.random.seed(1993)
    assert written.task_sizes == [10] * 10 and written.class_order == np.random.permutation(100).tolist()


def test_written_files_split_drawers_1_to_15_train_16_to_20_test_with_bright_ink(written):
    assert tuple(written.train_images.shape) == (1500, 1, 28, 28)
    assert tuple(written.test_images.shape) == (500, 1, 28, 28)
    ink = lambda images: (images.float() > 127).flatten(1).sum(1)  # noqa: E731
    # Drawers 16-20 draw larger squares than any of drawers 1-15: the test split holds exactly the last five.
    assert ink(written.test_images).min() > ink(written.train_images).max()
    assert written.train_images[0, 0, 0, 0] == 0  # paper is dark


@pytest.mark.parametrize("write, match", [
    (lambda root: write_npz(root, characters=50), r"images have shape \(50, 20, 105, 105\), expected \(100 or more"),
    (lambda root: write_npz(root, shape=(20, 64, 64)), r"images have shape \(100, 20, 64, 64\)"),
    (lambda root: root.mkdir() or np.savez(root / "images_evaluation.npz", pictures=np.zeros(1)), "no 'images' array"),
], ids=["too_few_characters", "wrong_image_size", "no_images_array"])
def test_malformed_npz_names_the_file_and_the_expected_shape(tmp_path, write, match):
    write(tmp_path / "d")
    with pytest.raises(ValueError, match=match) as info:
        load_benchmark(DataConfig(benchmark="omniglot", data_root=str(tmp_path / "d"), cache_dir=str(tmp_path / "c")))
    assert str(tmp_path / "d" / "images_evaluation.npz") in str(info.value)


def test_a_folder_without_the_npz_names_the_missing_file(tmp_path):
    with pytest.raises(ValueError, match="images_evaluation.npz: missing"):
        load_benchmark(DataConfig(benchmark="omniglot", data_root=str(tmp_path)))


# -- the real shared files ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def omniglot(tmp_path_factory):
    return load_benchmark(DataConfig(benchmark="omniglot", data_root=str(SHARED),
                                     cache_dir=str(tmp_path_factory.mktemp("cache"))))


@real_data
def test_real_files_100_evaluation_characters_in_10_tasks_at_28px(omniglot):
    assert omniglot.task_sizes == [10] * 10 and len(omniglot.class_names) == 100
    assert tuple(omniglot.train_images.shape) == (1500, 1, 28, 28) and omniglot.train_images.dtype == torch.uint8
    assert (torch.bincount(omniglot.test_labels) == 5).all()


@real_data
def test_real_files_ink_is_bright_on_a_dark_background(omniglot):
    image = omniglot.train_images[0, 0].float()
    assert image.max() > 200
    assert image.median() == 0  # most of a drawing is paper


@real_data
def test_the_background_set_is_all_964_characters_as_one_task(tmp_path):
    bench = load_benchmark(DataConfig(benchmark="omniglot_background", data_root=str(SHARED), cache_dir=str(tmp_path),
                                      image_size=14))
    assert bench.task_sizes == [964]
    assert tuple(bench.train_images.shape) == (964 * 15, 1, 14, 14)
