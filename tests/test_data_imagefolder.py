"""benchmark=imagefolder: layout, decoding, class order, the decoded-data cache, and every bad-data error."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slora.config import DataConfig
from slora.data import load_benchmark

COLOURS = {"apple": (220, 30, 30), "bird": (30, 200, 40), "cat": (40, 40, 210), "dog": (230, 230, 40)}
SIZES = ((40, 30), (24, 56))  # two sizes, landscape and portrait


def write_tree(root: Path, colours: dict = COLOURS, per_class: int = 2) -> Path:
    """root/{train,test}/<class>/ with solid-colour PNG and JPEG images of two sizes."""
    for split in ("train", "test"):
        for name, colour in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = Image.new("RGB", SIZES[i % 2], colour)
                if i % 2:
                    image.save(folder / f"{i}.jpg", quality=95)
                else:
                    image.convert("RGBA").save(folder / f"{i}.png")
    return root


def load(root: Path, cache: Path, **fields):
    return load_benchmark(DataConfig(benchmark="imagefolder", data_root=str(root), cache_dir=str(cache),
                                     image_size=16, **fields))


def permutation(n: int, seed: int) -> list[int]:
    np.random.seed(seed)
    return np.random.permutation(n).tolist()


def test_images_are_uint8_rgb_at_the_requested_size(tmp_path):
    bench = load(write_tree(tmp_path / "data"), tmp_path / "cache")
    assert bench.train_images.dtype == bench.test_images.dtype == torch.uint8
    assert tuple(bench.train_images.shape) == (8, 3, 16, 16)
    assert tuple(bench.test_images.shape) == (8, 3, 16, 16)


def test_class_names_are_sorted_folder_names_and_order_is_the_seeded_permutation(tmp_path):
    bench = load(write_tree(tmp_path / "data"), tmp_path / "cache")
    assert bench.class_names == sorted(COLOURS)
    assert bench.class_order == permutation(4, 1993)
    bench = load(tmp_path / "data", tmp_path / "cache", class_order_seed=7)
    assert bench.class_order == permutation(4, 7)


def test_labels_are_positions_in_the_class_order_and_pixels_match_the_class(tmp_path):
    bench = load(write_tree(tmp_path / "data"), tmp_path / "cache")
    for images, labels in ((bench.train_images, bench.train_labels), (bench.test_images, bench.test_labels)):
        for image, label in zip(images, labels):
            name = bench.class_names[bench.class_order[int(label)]]
            mean = image.float().mean(dim=(1, 2)).numpy()
            assert np.abs(mean - np.array(COLOURS[name])).max() < 6, name


def test_tasks_from_num_tasks_or_classes_per_task_with_remainder_last(tmp_path):
    root = write_tree(tmp_path / "data", {f"c{i}": (i * 20, 0, 0) for i in range(7)}, per_class=1)
    assert load(root, tmp_path / "cache", num_tasks=3).task_sizes == [2, 2, 3]
    assert load(root, tmp_path / "cache", classes_per_task=3).task_sizes == [3, 3, 1]


def test_imagefolder_trains_with_crop_flip_unless_told_otherwise(tmp_path):
    root = write_tree(tmp_path / "data")
    assert load(root, tmp_path / "cache").augment == "crop_flip"
    assert load(root, tmp_path / "cache", augment="none").augment == "none"


# -- the decoded-data cache ----------------------------------------------------------------------------------------

def entries(cache: Path, split: str) -> list[Path]:
    """Complete entries: a folder with its source.json written last."""
    return [p for p in (cache / "imagefolder").glob(f"{split}-*") if (p / "source.json").is_file()]


def test_a_second_load_reads_the_cache_instead_of_decoding(tmp_path, monkeypatch):
    root = write_tree(tmp_path / "data")
    first = load(root, tmp_path / "cache")
    import slora.data.imagefolder as imagefolder

    monkeypatch.setattr(imagefolder, "decode_into", lambda *a, **k: pytest.fail("decoded again"))
    second = load(root, tmp_path / "cache")
    assert (first.train_images == second.train_images).all()
    assert len(entries(tmp_path / "cache", "train")) == 1


def test_the_cache_dir_defaults_to_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SLORA_CACHE_DIR", str(tmp_path / "env-cache"))
    load_benchmark(DataConfig(benchmark="imagefolder", data_root=str(write_tree(tmp_path / "data")), image_size=16))
    assert len(entries(tmp_path / "env-cache", "test")) == 1


def test_two_folders_with_identical_content_never_share_an_entry(tmp_path):
    load(write_tree(tmp_path / "a"), tmp_path / "cache")
    load(write_tree(tmp_path / "b"), tmp_path / "cache")
    assert len(entries(tmp_path / "cache", "train")) == 2


def test_adding_a_file_makes_a_new_entry(tmp_path):
    root = write_tree(tmp_path / "data")
    load(root, tmp_path / "cache")
    Image.new("RGB", (20, 20), COLOURS["cat"]).save(root / "train" / "cat" / "extra.png")
    bench = load(root, tmp_path / "cache")
    assert len(bench.train_labels) == 9
    assert len(entries(tmp_path / "cache", "train")) == 2


def _load_and_hash(root: Path, cache: Path, barrier) -> str:
    barrier.wait()  # both processes start building at the same moment
    bench = load(Path(root), Path(cache))
    digest = hashlib.sha256(bench.train_images.numpy().tobytes() + bench.test_images.numpy().tobytes())
    return digest.hexdigest()


def test_two_processes_building_at_once_give_identical_arrays_and_one_entry(tmp_path):
    root = write_tree(tmp_path / "data", per_class=6)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    processes, queue = [], context.Queue()

    def target():
        queue.put(_load_and_hash(root, tmp_path / "cache", barrier))

    for _ in range(2):
        process = context.Process(target=target)
        process.start()
        processes.append(process)
    hashes = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert hashes[0] == hashes[1]
    assert len(entries(tmp_path / "cache", "train")) == 1
    assert len(entries(tmp_path / "cache", "test")) == 1
    assert not list((tmp_path / "cache").rglob("*.tmp-*"))


# -- errors, each one line naming the path, before any training ----------------------------------------------------

def expect_error(root: Path, cache: Path, fragment: str, **fields) -> str:
    with pytest.raises(ValueError) as info:
        load(root, cache, **fields)
    message = str(info.value)
    assert "\n" not in message
    assert fragment in message, message
    return message


def test_missing_folder(tmp_path):
    expect_error(tmp_path / "nowhere", tmp_path / "cache", str(tmp_path / "nowhere"))


def test_data_root_is_required(tmp_path):
    with pytest.raises(ValueError, match="needs data_root"):
        load_benchmark(DataConfig(benchmark="imagefolder"))


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_split_folder(tmp_path, split):
    root = write_tree(tmp_path / "data")
    for path in sorted((root / split).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / split).rmdir()
    expect_error(root, tmp_path / "cache", str(root / split))


def test_class_in_one_split_only(tmp_path):
    root = write_tree(tmp_path / "data")
    (root / "train" / "emu").mkdir()
    Image.new("RGB", (8, 8)).save(root / "train" / "emu" / "0.png")
    message = expect_error(root, tmp_path / "cache", "emu")
    assert str(root / "train") in message


def test_empty_class(tmp_path):
    root = write_tree(tmp_path / "data")
    for path in (root / "test" / "cat").iterdir():
        path.unlink()
    (root / "test" / "cat" / "notes.txt").write_text("not an image")
    expect_error(root, tmp_path / "cache", str(root / "test" / "cat"))


def test_fewer_classes_than_tasks(tmp_path):
    root = write_tree(tmp_path / "data")
    message = expect_error(root, tmp_path / "cache", str(root), num_tasks=5)
    assert "4 classes" in message


def test_unreadable_image_names_the_file(tmp_path):
    root = write_tree(tmp_path / "data")
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    expect_error(root, tmp_path / "cache", str(root / "train" / "dog" / "broken.png"))
    assert not entries(tmp_path / "cache", "train")  # nothing half-built is left as an entry
