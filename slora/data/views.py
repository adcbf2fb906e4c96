"""Subsets of a split's images as index arrays over the one memory-mapped uint8 array, never copies of it.

A boolean mask on a tensor copies every selected image: the validation hold-out, the per-class caps, each task's
training images and each stage's seen-class evaluation images would each copy a whole split out of the page cache
into the process (DomainNet at 224 px: about 62 GB of training images per worker). An ``ImageView`` keeps the base
array (the cache's copy-on-write memory map, whose pages every process of a node shares) and the rows it holds:
selecting with a mask narrows the rows, and only reading a batch (integer indices or a slice) gathers images.
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_map


class ImageView:
    """Rows ``index`` of ``base`` (N, C, H, W). ``view[mask]`` is a view; ``view[indices]``, ``view[a:b]`` and
    ``view[i]`` gather those images into a tensor. Torch functions and tensor methods it lacks see every row
    gathered (``torch.equal(view, other)``, ``view.numpy()``): convenient in tests, costly on a real split."""

    def __init__(self, base: torch.Tensor, index: torch.Tensor | None = None):
        self.base = base
        self.index = torch.arange(len(base)) if index is None else index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.base.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    def gather(self) -> torch.Tensor:
        return self.base[self.index]

    def __getitem__(self, key):
        if isinstance(key, torch.Tensor) and key.dtype == torch.bool:
            return ImageView(self.base, self.index[key])
        if isinstance(key, tuple):  # view[i, c, ...]: the rows first, then the rest of the key on them
            rows = self[key[0]]
            return rows[key[1:]] if isinstance(key[0], int) else rows[(slice(None), *key[1:])]
        if isinstance(key, int):
            return self.base[int(self.index[key])]
        return self.base[self.index[key]]  # integer indices or a slice: a batch

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        gather = lambda value: value.gather() if isinstance(value, ImageView) else value  # noqa: E731
        return func(*tree_map(gather, args), **tree_map(gather, kwargs or {}))

    def __getattr__(self, name: str):
        if name in ("base", "index") or name.startswith("__"):  # unpickling, copy: not yet initialised
            raise AttributeError(name)
        return getattr(self.gather(), name)

    def __eq__(self, other):
        return self.gather() == other

    def __array__(self, dtype=None, copy=None):
        array = self.gather().numpy()
        return array if dtype is None else array.astype(dtype)


def as_view(images: torch.Tensor | ImageView) -> ImageView:
    return images if isinstance(images, ImageView) else ImageView(images)
