"""Batches straight from uint8 tensors: seeded shuffling, even sharding over DDP ranks, augmentation on tensors.

Pixels cross to the device as uint8 (a quarter of float32's bytes) and become floats and are augmented there. On
a GPU each batch is gathered into pinned host memory and its copy is started one batch ahead, so the transfer and
the next gather overlap the step that runs on the previous batch.
"""

from __future__ import annotations

from typing import Iterator

import torch

from .augment import augment_batch


def train_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    seed: int,
    ddp_rank: int = 0,
    world_size: int = 1,
    augment: str = "none",
    device: torch.device | str = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch. Every DDP rank gets the same number of batches (DDP needs it): the permutation is padded."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    if world_size > 1:
        padded = -(-len(order) // world_size) * world_size
        order = torch.cat([order, order[: padded - len(order)]])[ddp_rank::world_size]
    batches = (order[start : start + batch_size] for start in range(0, len(order), batch_size))
    for pixels, y in _on_device(images, labels, batches, torch.device(device)):
        x = to_float(pixels)
        if augment != "none":
            x = augment_batch(x, augment, generator)
        yield x, y


def _on_device(images: torch.Tensor, labels: torch.Tensor, batches: Iterator[torch.Tensor], device: torch.device):
    """(pixels, labels) of each batch on ``device``; on CUDA through pinned memory, one batch in flight ahead (the
    caching host allocator reuses a pinned block only once the copy that read it has finished)."""
    def start(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = images[index], labels[index]
        if device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    ahead = None
    for index in batches:
        current, ahead = ahead, start(index)
        if current is not None:
            yield current
    if ahead is not None:
        yield ahead


def eval_batches(images: torch.Tensor, batch_size: int, device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    for start in range(0, len(images), batch_size):
        yield to_float(images[start : start + batch_size].to(device, non_blocking=True))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> floats in [0, 1]; mean/std (when used) belongs to the model's input, not here."""
    return images.float().div_(255.0)
