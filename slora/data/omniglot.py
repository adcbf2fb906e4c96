"""Omniglot (Lake et al. 2015) from its npz files: a real many-class benchmark that runs on a CPU.

Protocol: 105x105 drawings downsampled (area averaging) to 28x28 and inverted so ink is bright, drawers 1-15
train and 16-20 test (writer-disjoint). ``omniglot`` takes the first 100 characters of images_evaluation.npz
in 10 tasks of 10, class order np.random.seed(1993) permutation(100). ``omniglot_background`` is all 964
characters of images_background.npz as one task, for pre-training a backbone (pipelines/pretrain.py): the two
files share no alphabet.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import DataConfig
from .benchmark import Benchmark
from .cache import CacheKey, cache_root, fingerprint, load_or_build
from .imagefolder import make_benchmark

TRAIN_DRAWERS = 15  # of 20; the rest are the test split
DEFAULT_SIZE = 28


@dataclass(frozen=True)
class OmniglotSpec:
    name: str
    file: str
    num_characters: int  # the first this many characters of the file
    num_tasks: int


SPECS = {
    "omniglot": OmniglotSpec("omniglot", "images_evaluation.npz", num_characters=100, num_tasks=10),
    "omniglot_background": OmniglotSpec("omniglot_background", "images_background.npz", num_characters=964,
                                        num_tasks=1),
}


def omniglot_file(cfg: DataConfig, spec: OmniglotSpec) -> Path:
    path = Path(cfg.data_root).expanduser().resolve() / spec.file
    if not cfg.data_root or not path.is_file():
        raise ValueError(f"{path}: missing; benchmark={spec.name} expects data_root=DIR holding {spec.file} "
                         f"(images bool (chars, 20, 105, 105)), the npz conversion of github.com/brendenlake/omniglot "
                         f"by github.com/bitsandscraps/omniglot")
    return path


def load(cfg: DataConfig, spec: OmniglotSpec) -> Benchmark:
    path = omniglot_file(cfg, spec)
    size = cfg.image_size or DEFAULT_SIZE
    drawers = {"train": slice(0, TRAIN_DRAWERS), "test": slice(TRAIN_DRAWERS, None)}
    arrays = {}
    for split, chosen in drawers.items():
        per_class = len(range(20)[chosen])
        labels = np.repeat(np.arange(spec.num_characters, dtype=np.int64), per_class)
        key = CacheKey(spec.name, split, size,
                       fingerprint(path.parent, [path], extra=[split, spec.num_characters, TRAIN_DRAWERS]))
        fill = partial(_downsample, path=path, characters=spec.num_characters, drawers=chosen, size=size)
        arrays[split] = load_or_build(cache_root(cfg.cache_dir), key, labels, (1, size, size), fill,
                                      source={"root": str(path)})
    part = spec.file.removeprefix("images_").removesuffix(".npz")
    names = [f"{part}/{i:03d}" for i in range(spec.num_characters)]
    return make_benchmark(spec.name, arrays["train"], arrays["test"], names, cfg, default_tasks=spec.num_tasks,
                          default_seed=1993, default_augment="none", where=str(path))


def _downsample(out: np.ndarray, path: Path, characters: int, drawers: slice, size: int) -> None:
    with np.load(path) as data:
        if "images" not in data:
            raise ValueError(f"{path}: no 'images' array (has {', '.join(data.files) or 'nothing'}); expected "
                             f"images bool (chars, 20, 105, 105)")
        images = data["images"]
    if images.ndim != 4 or images.shape[1:] != (20, 105, 105) or len(images) < characters:
        raise ValueError(f"{path}: images have shape {images.shape}, expected ({characters} or more chars, 20, 105, "
                         f"105)")
    images = images[:characters, drawers]  # bool, True = paper
    ink = (~images).reshape(-1, 105, 105).astype(np.uint8) * 255  # ink bright, paper dark
    for i, drawing in enumerate(ink):
        out[i, 0] = np.asarray(Image.fromarray(drawing).resize((size, size), Image.BOX))


def loader(name: str):
    return partial(load, spec=SPECS[name])
