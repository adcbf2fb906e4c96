"""Decoded-data cache: each split decoded once into uint8 ``.npy`` files that later runs memory-map.

An entry is a folder ``<cache_dir>/<benchmark>/<split>-<size>px-<fingerprint>/`` holding ``images.npy``
(uint8, N x C x H x W), ``labels.npy`` (int64 original class ids) and ``source.json``. The fingerprint hashes
the source's absolute path and every file's relative path, size and mtime (plus DECODE_VERSION), so two
different folders, or one folder after an edit, never share an entry.

Several processes (Ray trials, DDP ranks) may ask for the same entry at once. One of them builds it under an
exclusive ``fcntl`` lock on ``<entry>.lock``; the others block on the lock and then read what it wrote. Every
file is written under a temporary name and moved into place with ``os.replace`` (atomic on POSIX), and
``source.json`` goes last: an entry is complete exactly when ``source.json`` exists, so a reader never sees a
half-written array, and a build killed midway leaves only temporary files that the next build removes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

# Bump when the decoding (resize, crop, interpolation) changes: old entries then stop matching.
DECODE_VERSION = 1
CACHE_ENV = "SLORA_CACHE_DIR"
COMPLETE_MARKER = "source.json"


def cache_root(cache_dir: str = "") -> Path:
    """DataConfig.cache_dir, else $SLORA_CACHE_DIR, else ~/.cache/slora-sweep."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or "~/.cache/slora-sweep").expanduser()


def fingerprint(root: Path, files: Iterable[Path], extra: object = None) -> str:
    """sha256 of the absolute root, each file's path relative to it with size and mtime, and ``extra``."""
    root = Path(root).resolve()
    digest = hashlib.sha256()
    digest.update(json.dumps([str(root), DECODE_VERSION, extra]).encode())
    for path in files:
        stat = os.stat(path)
        digest.update(f"\n{Path(path).resolve().relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    benchmark: str
    split: str  # "train" or "test"
    image_size: int
    fingerprint: str

    def folder(self, root: Path) -> Path:
        return Path(root) / self.benchmark / f"{self.split}-{self.image_size}px-{self.fingerprint[:24]}"


def load_or_build(
    root: Path,
    key: CacheKey,
    labels: np.ndarray,
    image_shape: tuple[int, int, int],
    fill: Callable[[np.ndarray], None],
    source: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The entry's (images, labels), memory-mapped; built first by ``fill(images_out)`` if absent.

    ``fill`` receives a writable uint8 array of shape (len(labels), *image_shape) backed by the temporary file
    and must write every image into it. Arrays come back copy-on-write (``mmap_mode="c"``): writable for torch,
    pages shared between processes until written, and the file on disk never changes.
    """
    entry = key.folder(root)
    if not (entry / COMPLETE_MARKER).is_file():
        with _exclusive_lock(entry.with_name(entry.name + ".lock")):
            if not (entry / COMPLETE_MARKER).is_file():  # another process may have built it while we waited
                _build(entry, key, np.asarray(labels, dtype=np.int64), image_shape, fill, source or {})
    images = np.load(entry / "images.npy", mmap_mode="c")
    stored_labels = np.load(entry / "labels.npy")
    if len(images) != len(stored_labels) or tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"decoded-data cache entry {entry} is inconsistent ({images.shape} images, "
                         f"{len(stored_labels)} labels, expected {tuple(image_shape)}): delete that folder")
    return images, stored_labels


def _build(entry: Path, key: CacheKey, labels: np.ndarray, image_shape: tuple, fill: Callable, source: dict) -> None:
    entry.mkdir(parents=True, exist_ok=True)
    for stale in entry.glob("*.tmp-*"):  # left by a build that was killed; we hold the lock, so nobody else's
        stale.unlink()
    tmp = f".tmp-{os.getpid()}"
    try:
        _write(entry, key, labels, image_shape, fill, source, tmp)
    except BaseException:
        for partial in entry.glob(f"*{tmp}"):
            partial.unlink()
        if not any(entry.iterdir()):
            entry.rmdir()
        raise


def _write(entry: Path, key: CacheKey, labels: np.ndarray, image_shape: tuple, fill: Callable, source: dict,
           tmp: str) -> None:
    images = np.lib.format.open_memmap(entry / f"images.npy{tmp}", mode="w+", dtype=np.uint8,
                                       shape=(len(labels), *image_shape))
    fill(images)
    images.flush()
    del images
    os.replace(entry / f"images.npy{tmp}", entry / "images.npy")
    with open(entry / f"labels.npy{tmp}", "wb") as handle:  # a path would get ".npy" appended by np.save
        np.save(handle, labels, allow_pickle=False)
    os.replace(entry / f"labels.npy{tmp}", entry / "labels.npy")
    meta = {"benchmark": key.benchmark, "split": key.split, "image_size": key.image_size,
            "fingerprint": key.fingerprint, "decode_version": DECODE_VERSION, "count": int(len(labels)), **source}
    (entry / f"{COMPLETE_MARKER}{tmp}").write_text(json.dumps(meta, indent=1))
    os.replace(entry / f"{COMPLETE_MARKER}{tmp}", entry / COMPLETE_MARKER)


@contextmanager
def _exclusive_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
