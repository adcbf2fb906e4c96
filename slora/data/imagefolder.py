"""Benchmarks from ImageFolder trees: ``DATA_ROOT/{train,test}/<class>/<image files>``.

Classes are the folder names, sorted (torchvision's ImageFolder ids, which the official code permutes). Every
problem with the tree is one ValueError naming the path, raised while loading, before any training starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import DataConfig
from .benchmark import Benchmark, class_order, remap, split_tasks
from .cache import CacheKey, cache_root, fingerprint, load_or_build
from .decode import decode_into, image_extensions

SPLITS = ("train", "test")
LAYOUT = "DATA_ROOT/train/<class>/<images> and DATA_ROOT/test/<class>/<images>"


@dataclass(frozen=True)
class FolderSpec:
    """A benchmark's defaults; the user's DataConfig fields override them where set."""

    name: str
    default_root: str = ""  # where the official code looks, relative to the working directory
    num_tasks: int = 10
    seed: int = 1993
    image_size: int = 224
    augment: str = "crop_flip"
    num_classes: int = 0  # 0: any; else the count the benchmark must have
    source: str = ""  # where the data comes from, for the missing-data error


@dataclass
class FolderSplit:
    files: list[Path]
    labels: np.ndarray  # int64 class ids (index into the sorted class names)


IMAGEFOLDER = FolderSpec(name="imagefolder", num_tasks=0, num_classes=0,
                         source="your own images, one folder per class")


def load_imagefolder(cfg: DataConfig, spec: FolderSpec = IMAGEFOLDER,
                     scan: Callable[[Path, FolderSpec], tuple[list[str], dict[str, FolderSplit]]] | None = None
                     ) -> Benchmark:
    """``scan`` lists the files and labels of each split (default: the ImageFolder tree)."""
    root = resolve_root(cfg, spec)
    class_names, splits = (scan or scan_tree)(root, spec)
    size = cfg.image_size or spec.image_size
    arrays = {}
    for split, listing in splits.items():
        key = CacheKey(spec.name, split, size, fingerprint(root, listing.files, extra=split))
        fill = lambda out, files=listing.files, split=split: decode_into(out, files, size, split)  # noqa: E731
        arrays[split] = load_or_build(cache_root(cfg.cache_dir), key, listing.labels, (3, size, size), fill,
                                      source={"root": str(root)})
    return make_benchmark(spec.name, arrays["train"], arrays["test"], class_names, cfg,
                          default_tasks=spec.num_tasks, default_seed=spec.seed, default_augment=spec.augment,
                          where=str(root))


def resolve_root(cfg: DataConfig, spec: FolderSpec) -> Path:
    if not cfg.data_root and not spec.default_root:
        raise ValueError(f"benchmark={spec.name} needs data_root=DIR, a folder laid out as {LAYOUT}")
    root = Path(cfg.data_root or spec.default_root).expanduser().resolve()
    if not root.is_dir():
        source = f"; the data comes from {spec.source}" if spec.source else ""
        raise ValueError(f"data_root={root}: no such folder; benchmark={spec.name} expects {LAYOUT}{source}")
    return root


def scan_tree(root: Path, spec: FolderSpec) -> tuple[list[str], dict[str, FolderSplit]]:
    """Class names (sorted) and each split's files and labels, after checking the tree is a valid benchmark."""
    classes = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise ValueError(f"{folder}: missing; benchmark={spec.name} expects {LAYOUT}")
        classes[split] = sorted(entry.name for entry in os.scandir(folder)
                                if entry.is_dir() and not entry.name.startswith("."))
        if not classes[split]:
            raise ValueError(f"{folder}: no class folders; expected {LAYOUT}")
    train_only = sorted(set(classes["train"]) - set(classes["test"]))
    test_only = sorted(set(classes["test"]) - set(classes["train"]))
    if train_only or test_only:
        where, names = ("train", train_only) if train_only else ("test", test_only)
        other = "test" if where == "train" else "train"
        raise ValueError(f"{root / where}: class folder(s) {', '.join(names[:5])} have no counterpart in "
                         f"{root / other}; both splits must hold the same class folders")
    class_names = classes["train"]
    if spec.num_classes and len(class_names) != spec.num_classes:
        raise ValueError(f"{root}: {len(class_names)} class folders, but benchmark={spec.name} has "
                         f"{spec.num_classes} classes; expected {LAYOUT}")
    extensions = image_extensions()
    splits = {}
    for split in SPLITS:
        files, labels = [], []
        for label, name in enumerate(class_names):
            found = _image_files(root / split / name, extensions)
            if not found:
                raise ValueError(f"{root / split / name}: no image files (expected PNG, JPEG or another format "
                                 f"PIL reads); every class needs images in both train/ and test/")
            files += found
            labels += [label] * len(found)
        splits[split] = FolderSplit(files, np.asarray(labels, dtype=np.int64))
    return class_names, splits


def _image_files(folder: Path, extensions: set[str]) -> list[Path]:
    """Files under ``folder`` (recursively, as ImageFolder) whose extension PIL knows; hidden files skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions]
    return found


def make_benchmark(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    class_names: list[str],
    cfg: DataConfig,
    default_tasks: int,
    default_seed: int,
    default_augment: str,
    where: str,
) -> Benchmark:
    """Class order from the seed (official: np.random.seed(seed); permutation), tasks, labels remapped."""
    num_classes = len(class_names)
    seed = default_seed if cfg.class_order_seed < 0 else cfg.class_order_seed
    order = class_order(num_classes, seed)
    tasks = cfg.num_tasks or (0 if cfg.classes_per_task else (default_tasks or min(num_classes, 5)))
    try:
        sizes = split_tasks(num_classes, tasks, cfg.classes_per_task)
    except ValueError as err:
        raise ValueError(f"{where}: {num_classes} classes cannot make this split ({err})") from None
    return Benchmark(
        name=name,
        train_images=torch.from_numpy(train[0]),
        train_labels=remap(train[1], order),
        test_images=torch.from_numpy(test[0]),
        test_labels=remap(test[1], order),
        class_order=order,
        class_names=list(class_names),
        task_sizes=sizes,
        order_seed=seed,
        augment=default_augment,  # load_benchmark applies DataConfig.augment when it is not "auto"
    )
