"""Image files -> fixed-size uint8 arrays, with the official transforms' resize and crop done at decode time.

The official test transform is Resize(256, bicubic) + CenterCrop(224) (docs/method.md §9): the shorter side goes to
size * 256/224, then a centre crop of ``size``. Training images are decoded with the shorter side at ``size``
and the same centre crop, keeping as much of the image as a fixed square allows; RandomResizedCrop and the flip
then run on those tensors at every batch (augment.py). That is the one departure from the official pipeline,
which crops from the full-resolution file: the crops here come from the centre square of the image.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

TEST_RESIZE_RATIO = 256 / 224  # Resize(256) before CenterCrop(224)


def image_extensions() -> set[str]:
    """Every file extension some installed PIL plugin can open (lower case, with the dot)."""
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def resize_shorter_center_crop(image: Image.Image, shorter: int, crop: int) -> Image.Image:
    """torchvision's Resize(shorter, bicubic) then CenterCrop(crop), on a PIL image."""
    width, height = image.size
    if width <= height:
        size = (shorter, max(shorter, int(shorter * height / width)))
    else:
        size = (max(shorter, int(shorter * width / height)), shorter)
    if size != image.size:
        image = image.resize(size, Image.BICUBIC)
    left = int(round((size[0] - crop) / 2.0))
    top = int(round((size[1] - crop) / 2.0))
    return image.crop((left, top, left + crop, top + crop))


def decode_image(path: Path, size: int, split: str) -> np.ndarray:
    """One file -> uint8 (3, size, size). Raises ValueError naming the file when PIL cannot read it."""
    shorter = size if split == "train" else int(round(size * TEST_RESIZE_RATIO))
    try:
        with Image.open(path) as image:
            image.draft("RGB", (shorter, shorter))  # JPEG: decode at a reduced scale, still >= the target
            image = image.convert("RGB")
            image = resize_shorter_center_crop(image, shorter, size)
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: unreadable image ({type(err).__name__}: {err}); fix or remove the file") from None


def decode_into(out: np.ndarray, paths: Sequence[Path], size: int, split: str, workers: int = 0) -> None:
    """Decode ``paths`` into ``out[i]`` in threads (PIL releases the GIL while it decodes and resizes), with a
    progress bar and its images/s on a terminal: a large split takes minutes, once per cache entry."""

    def one(index: int) -> None:
        out[index] = decode_image(paths[index], size, split)

    workers = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = pool.map(one, range(len(paths)))  # consuming the results re-raises the first error
        for _ in tqdm(done, total=len(paths), desc=f"decoding {split} images into the cache", unit="img",
                      mininterval=1.0, disable=None):  # None: off when stderr is no terminal (logs, CI)
            pass
