"""The paper's benchmarks (docs/method.md §9), read from local files in the layout the official code expects.

ImageNet-R, ImageNet-A and CUB are ImageFolder trees ``train/<class>/`` and ``test/<class>/``; DomainNet is its
own ``<domain>_{train,test}.txt`` split lists (the InfLoRA/CODA-Prompt protocol) or such a tree; CIFAR-100 is the
standard ``cifar-100-python`` pickles. Nothing downloads: a missing dataset is a one-line
error naming the path, the layout and where the data comes from.
"""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path

import numpy as np

try:  # numpy >= 2 keeps it in numpy._core; the CIFAR files name numpy.core (numpy 1.x)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

from ..config import DataConfig
from .benchmark import Benchmark
from .cache import CacheKey, cache_root, fingerprint, load_or_build
from .decode import TEST_RESIZE_RATIO, resize_shorter_center_crop
from .imagefolder import LAYOUT, FolderSpec, FolderSplit, load_imagefolder, make_benchmark, scan_tree
from .split_lists import LIST_LAYOUT, has_split_lists, scan_split_lists

PILOT_SPLITS = "the pre-split archives used by ADAM/LAMDA-PILOT (SD-LoRA issue #7)"

# Seeds, task counts and folders of the official configs; class counts of the paper (docs/method.md §5, §9).
FOLDER_BENCHMARKS = {
    spec.name: spec
    for spec in (
        FolderSpec("imagenet_r_5", "data/imagenet-r", num_tasks=5, seed=1995, num_classes=200,
                   source=f"ImageNet-R (Hendrycks et al.), {PILOT_SPLITS}"),
        FolderSpec("imagenet_r_10", "data/imagenet-r", num_tasks=10, seed=1995, num_classes=200,
                   source=f"ImageNet-R (Hendrycks et al.), {PILOT_SPLITS}"),
        FolderSpec("imagenet_r_20", "data/imagenet-r", num_tasks=20, seed=1995, num_classes=200,
                   source=f"ImageNet-R (Hendrycks et al.), {PILOT_SPLITS}"),
        FolderSpec("imagenet_a", "data/imagenet-a", num_tasks=10, seed=1993, num_classes=200,
                   source=f"ImageNet-A (Hendrycks et al.), {PILOT_SPLITS}"),
        FolderSpec("domainnet", "data/domainnet", num_tasks=5, seed=1993, num_classes=345,
                   source="DomainNet (ai.bu.edu/M3SDA): the six domain folders with their <domain>_train.txt and "
                          "<domain>_test.txt split lists"),
        FolderSpec("cub", "data/cub", num_tasks=10, seed=1993, num_classes=200,
                   source=f"CUB-200-2011 (Caltech), {PILOT_SPLITS}"),
    )
}

CIFAR = FolderSpec("cifar100", "data", num_tasks=10, seed=1993, num_classes=100,
                   source="CIFAR-100 python version, www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (extracted)")
CIFAR_LAYOUT = "DATA_ROOT/cifar-100-python/{train,test,meta} (or those three files directly in DATA_ROOT)"


def folder_loader(name: str):
    scan = scan_lists_or_tree if name == "domainnet" else None
    return partial(load_imagefolder, spec=FOLDER_BENCHMARKS[name], scan=scan)


def scan_lists_or_tree(root: Path, spec: FolderSpec) -> tuple[list[str], dict[str, FolderSplit]]:
    """DomainNet's split lists when DATA_ROOT has them and no train/ tree, else the ImageFolder tree."""
    if (root / "train").is_dir():
        return scan_tree(root, spec)
    if has_split_lists(root):
        return scan_split_lists(root, spec)
    raise ValueError(f"{root}: neither split lists nor a train/ folder; benchmark={spec.name} expects {LIST_LAYOUT} "
                     f"(or {LAYOUT}); the data comes from {spec.source}")


# -- CIFAR-100 -----------------------------------------------------------------------------------------------------

def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"bytes encoded as {encoding!r} are not allowed in a CIFAR-100 file")
    return text.encode("latin1")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """The CIFAR pickles are dicts of lists, strings and numpy arrays: allow numpy's array rebuilders, nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-100 file")
        return self.ALLOWED[module, name]


def read_cifar_file(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            data = _ArraysOnlyUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a CIFAR-100 python file ({err}); expected {CIFAR_LAYOUT}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a CIFAR-100 python file (holds a {type(data).__name__}, not a dict)")
    return data


def cifar_folder(cfg: DataConfig) -> Path:
    root = Path(cfg.data_root or CIFAR.default_root).expanduser().resolve()
    for folder in (root / "cifar-100-python", root):
        if all((folder / name).is_file() for name in ("train", "test", "meta")):
            return folder
    raise ValueError(f"data_root={root}: no CIFAR-100 files; benchmark=cifar100 expects {CIFAR_LAYOUT}; the data "
                     f"comes from {CIFAR.source}")


def load_cifar100(cfg: DataConfig) -> Benchmark:
    folder = cifar_folder(cfg)
    meta = read_cifar_file(folder / "meta")
    class_names = [str(n) for n in meta["fine_label_names"]]
    size = cfg.image_size or CIFAR.image_size
    arrays = {}
    for split in ("train", "test"):
        path = folder / split
        data = read_cifar_file(path)
        try:
            raw = np.asarray(data["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(data["fine_labels"], dtype=np.int64)
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path}: not a CIFAR-100 python file ({type(err).__name__}: {err})") from None
        if len(raw) != len(labels) or labels.min() < 0 or labels.max() >= len(class_names):
            raise ValueError(f"{path}: {len(raw)} images, {len(labels)} labels in "
                             f"{labels.min()}..{labels.max()}, {len(class_names)} class names")
        key = CacheKey(CIFAR.name, split, size, fingerprint(folder, [path], extra=split))
        fill = partial(_upscale_cifar, raw=raw, size=size, split=split)
        arrays[split] = load_or_build(cache_root(cfg.cache_dir), key, labels, (3, size, size), fill,
                                      source={"root": str(folder)})
    return make_benchmark(CIFAR.name, arrays["train"], arrays["test"], class_names, cfg,
                          default_tasks=CIFAR.num_tasks, default_seed=CIFAR.seed, default_augment=CIFAR.augment,
                          where=str(folder))


def _upscale_cifar(out: np.ndarray, raw: np.ndarray, size: int, split: str) -> None:
    """32 px -> ``size`` as the official iCIFAR224: bicubic, test via Resize(size*256/224) + CenterCrop(size)."""
    from PIL import Image

    shorter = size if split == "train" else int(round(size * TEST_RESIZE_RATIO))
    for i, image in enumerate(raw):
        pil = Image.fromarray(image.transpose(1, 2, 0))
        out[i] = np.asarray(resize_shorter_center_crop(pil, shorter, size)).transpose(2, 0, 1)
