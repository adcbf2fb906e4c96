"""Benchmarks given as split lists: ``DATA_ROOT/<domain>_train.txt`` and ``<domain>_test.txt``.

This is how DomainNet ships (ai.bu.edu/M3SDA) and how InfLoRA and CODA-Prompt, whose DomainNet protocol the
paper follows, read it: every line is ``<domain>/<class>/<file> <label>``, paths relative to DATA_ROOT, labels
0..C-1, and the lists of all domains are concatenated. Class names come from the paths' class folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .imagefolder import FolderSpec, FolderSplit

SPLITS = ("train", "test")
LIST_LAYOUT = "DATA_ROOT/<domain>_train.txt and DATA_ROOT/<domain>_test.txt, lines '<domain>/<class>/<file> <label>'"


def has_split_lists(root: Path) -> bool:
    return any(root.glob("*_train.txt"))


def scan_split_lists(root: Path, spec: FolderSpec) -> tuple[list[str], dict[str, FolderSplit]]:
    """Class names (by label) and each split's files and labels, after checking every line and file."""
    domains = sorted(path.name.removesuffix("_train.txt") for path in root.glob("*_train.txt"))
    missing = [f"{d}_test.txt" for d in domains if not (root / f"{d}_test.txt").is_file()]
    if not domains or missing:
        raise ValueError(f"{root}: {'missing ' + ', '.join(missing) if missing else 'no split lists'}; "
                         f"benchmark={spec.name} expects {LIST_LAYOUT}")
    names: dict[int, str] = {}
    splits = {}
    for split in SPLITS:
        files, labels = [], []
        for domain in domains:
            for path, label in _read_list(root / f"{domain}_{split}.txt", root, names):
                files.append(path)
                labels.append(label)
        splits[split] = FolderSplit(files, np.asarray(labels, dtype=np.int64))
    num_classes = max(names) + 1
    gaps = sorted(set(range(num_classes)) - names.keys())
    if gaps:
        raise ValueError(f"{root}: the split lists use labels up to {num_classes - 1} but never {gaps[:5]}; "
                         f"labels must be 0..C-1")
    for split in SPLITS:
        absent = sorted(set(range(num_classes)) - set(splits[split].labels.tolist()))
        if absent:
            raise ValueError(f"{root}: no {split} images for class(es) {[names[c] for c in absent[:5]]}; every "
                             f"class needs images in both splits")
    if spec.num_classes and num_classes != spec.num_classes:
        raise ValueError(f"{root}: {num_classes} classes in the split lists, but benchmark={spec.name} has "
                         f"{spec.num_classes}; expected {LIST_LAYOUT}")
    return [names[c] for c in range(num_classes)], splits


def _read_list(path: Path, root: Path, names: dict[int, str]):
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path}:{number}"
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise ValueError(f"{where}: {line.strip()!r} is not '<domain>/<class>/<file> <label>'")
        relative, label = Path(fields[0]), int(fields[1])
        if label < 0 or len(relative.parts) < 2:
            raise ValueError(f"{where}: {line.strip()!r} is not '<domain>/<class>/<file> <label>' with label >= 0")
        image = root / relative
        if not image.is_file():
            raise ValueError(f"{where}: {image} does not exist; paths in the lists are relative to {root}")
        name = relative.parts[-2]
        if names.setdefault(label, name) != name:
            raise ValueError(f"{where}: label {label} is class {names[label]!r} elsewhere but {name!r} here")
        yield image, label
