"""The paper's benchmarks read from local files: CIFAR-100 pickles and ImageFolder trees, seeds, splits, presets."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slora.config import DataConfig
from slora.data import load_benchmark
from slora.data.paper import FOLDER_BENCHMARKS, scan_lists_or_tree
from slora.configure import compose_run


def permutation(n: int, seed: int) -> list[int]:
    np.random.seed(seed)
    return np.random.permutation(n).tolist()


def write_cifar(folder: Path, per_class: int = 1) -> Path:
    """Files shaped like the cifar-100-python release: dict pickles of a uint8 array and label lists."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        labels = [c for c in range(100) for _ in range(per_class)]
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / split, "wb") as handle:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * len(labels)}, handle, protocol=2)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"class{c:02d}" for c in range(100)]}, handle, protocol=2)
    return folder


def write_classes(root: Path, num_classes: int) -> Path:
    for split in ("train", "test"):
        for c in range(num_classes):
            (root / split / f"n{c:03d}").mkdir(parents=True)
            Image.new("RGB", (12, 10), (c, 0, 0)).save(root / split / f"n{c:03d}" / "0.png")
    return root


def test_cifar100_reads_the_python_pickles_in_10_tasks_of_10_with_seed_1993(tmp_path):
    write_cifar(tmp_path / "data" / "cifar-100-python")
    bench = load_benchmark(DataConfig(benchmark="cifar100", data_root=str(tmp_path / "data"),
                                      cache_dir=str(tmp_path / "cache"), image_size=16))
    assert tuple(bench.train_images.shape) == (100, 3, 16, 16) and bench.train_images.dtype == torch.uint8
    assert bench.task_sizes == [10] * 10
    assert bench.class_order == permutation(100, 1993)
    assert bench.class_names[5] == "class05"
    assert bench.augment == "crop_flip"


def test_cifar100_refuses_a_pickle_that_builds_anything_but_arrays(tmp_path):
    folder = write_cifar(tmp_path / "data")
    with open(folder / "train", "wb") as handle:
        pickle.dump({"data": os.getcwd, "fine_labels": []}, handle, protocol=2)
    with pytest.raises(ValueError, match="not allowed"):
        load_benchmark(DataConfig(benchmark="cifar100", data_root=str(folder), cache_dir=str(tmp_path / "cache")))


def test_missing_cifar100_names_the_path_layout_and_source(tmp_path):
    with pytest.raises(ValueError) as info:
        load_benchmark(DataConfig(benchmark="cifar100", data_root=str(tmp_path / "none")))
    message = str(info.value)
    assert str(tmp_path / "none") in message and "cifar-100-python" in message and "toronto" in message
    assert "\n" not in message


@pytest.mark.parametrize("name, tasks, seed", [("imagenet_r_5", [40] * 5, 1995), ("imagenet_r_10", [20] * 10, 1995),
                                               ("imagenet_r_20", [10] * 20, 1995), ("imagenet_a", [20] * 10, 1993),
                                               ("cub", [20] * 10, 1993)])
def test_200_class_benchmarks_split_and_order_as_the_official_configs(tmp_path_factory, name, tasks, seed):
    root = tmp_path_factory.getbasetemp() / "two_hundred"
    if not root.exists():
        write_classes(root, 200)
    bench = load_benchmark(DataConfig(benchmark=name, data_root=str(root), image_size=8,
                                      cache_dir=str(tmp_path_factory.getbasetemp() / "cache")))
    assert bench.task_sizes == tasks
    assert bench.class_order == permutation(200, seed)
    assert bench.augment == "crop_flip"


def test_domainnet_is_5_tasks_of_69(tmp_path):
    bench = load_benchmark(DataConfig(benchmark="domainnet", data_root=str(write_classes(tmp_path / "d", 345)),
                                      image_size=8, cache_dir=str(tmp_path / "cache")))
    assert bench.task_sizes == [69] * 5
    assert bench.class_order == permutation(345, 1993)


def write_split_lists(root: Path, num_classes: int, domains=("clipart", "sketch")) -> Path:
    """DomainNet's release layout: <domain>/<class>/<file> images and <domain>_{train,test}.txt lists."""
    for domain in domains:
        for split in ("train", "test"):
            lines = []
            for c in range(num_classes):
                image = Path(domain) / f"class_{c:03d}" / f"{domain}_{c:03d}_{split}.png"
                (root / image).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (9, 12), (c % 256, len(domain), 0)).save(root / image)
                lines.append(f"{image} {c}")
            (root / f"{domain}_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_domainnet_reads_the_split_lists_of_every_domain(tmp_path):
    root = write_split_lists(tmp_path / "domainnet", 345)
    bench = load_benchmark(DataConfig(benchmark="domainnet", data_root=str(root), image_size=8,
                                      cache_dir=str(tmp_path / "cache")))
    assert bench.task_sizes == [69] * 5 and bench.class_order == permutation(345, 1993)
    assert len(bench.train_labels) == len(bench.test_labels) == 2 * 345  # both domains' lists, concatenated
    assert bench.class_names[7] == "class_007"
    # Labels are remapped to positions in the class order: class c sits at order.index(c).
    order = bench.class_order
    assert sorted(bench.train_labels.tolist()) == sorted(2 * [order.index(c) for c in range(345)])


@pytest.mark.parametrize("corrupt, match", [
    (lambda root: (root / "sketch_test.txt").unlink(), "missing sketch_test.txt"),
    (lambda root: (root / "clipart_train.txt").write_text("clipart/class_000/clipart_000_train.png\n"),
     r"clipart_train.txt:1: .* is not '<domain>/<class>/<file> <label>'"),
    (lambda root: (root / "clipart" / "class_001" / "clipart_001_test.png").unlink(),
     "clipart_001_test.png does not exist"),
    (lambda root: (root / "sketch_train.txt").write_text("clipart/class_001/clipart_001_train.png 0\n"),
     "label 0 is class 'class_000' elsewhere but 'class_001' here"),
    (lambda root: (root / "clipart_test.txt").write_text(""), None),  # sketch_test.txt still covers every class
])
def test_bad_split_lists_name_the_file_and_line(tmp_path, corrupt, match):
    root = write_split_lists(tmp_path / "d", 3)
    corrupt(root)
    spec = FOLDER_BENCHMARKS["domainnet"]
    if match is None:
        names, splits = scan_lists_or_tree(root, spec.__class__(**{**spec.__dict__, "num_classes": 3}))
        assert names == ["class_000", "class_001", "class_002"] and len(splits["test"].files) == 3
        return
    with pytest.raises(ValueError, match=match):
        load_benchmark(DataConfig(benchmark="domainnet", data_root=str(root), cache_dir=str(tmp_path / "c")))


def test_domainnet_with_neither_lists_nor_tree_names_both_layouts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as info:
        load_benchmark(DataConfig(benchmark="domainnet", data_root=str(tmp_path / "empty")))
    message = str(info.value)
    assert "_train.txt" in message and "train/<class>" in message and "M3SDA" in message


def test_a_tree_with_the_wrong_class_count_is_refused(tmp_path):
    root = write_classes(tmp_path / "r", 3)
    with pytest.raises(ValueError, match="3 class folders, but benchmark=imagenet_r_10 has 200"):
        load_benchmark(DataConfig(benchmark="imagenet_r_10", data_root=str(root), cache_dir=str(tmp_path / "c")))


def test_missing_imagenet_r_names_the_path_and_where_the_data_comes_from(tmp_path):
    with pytest.raises(ValueError) as info:
        load_benchmark(DataConfig(benchmark="imagenet_r_10", data_root=str(tmp_path / "none")))
    message = str(info.value)
    assert str(tmp_path / "none") in message and "train/<class>" in message and "ImageNet-R" in message


def test_paper_presets_carry_the_official_optimiser_and_backbone():
    cfg = compose_run(["benchmark=imagenet_a"])
    assert (cfg.optim.optimizer, cfg.optim.lr_direction, cfg.optim.batch_size) == ("sgd", 5e-3, 128)
    assert cfg.optim.first_task_lr_scale == 2.0  # init_lr 1e-2 on task 0
    assert (cfg.optim.milestones, cfg.optim.lr_decay, cfg.optim.epochs) == ([10, 15], 0.05, 20)
    assert cfg.backbone.name == "vit_base_patch16_224.augreg2_in21k_ft_in1k" and cfg.backbone.pretrained
    assert (cfg.backbone.embed_dim, cfg.backbone.depth, cfg.backbone.patch_size) == (0, 0, 0)
    dom = compose_run(["benchmark=domainnet"])
    assert (dom.optim.lr_head, dom.optim.milestones, dom.optim.lr_decay, dom.optim.epochs) == \
        (0.02, [4, 6, 8], 0.005, 10)
    assert compose_run(["benchmark=cifar100"]).optim.lr_magnitude == 8e-3
    assert compose_run(["benchmark=cifar100", "lr_head=0.1"]).optim.lr_head == 0.1
