"""Batches straight from uint8 tensors: seeded shuffling, even sharding over DDP ranks, augmentation on tensors."""

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
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        x = to_float(images[index].to(device, non_blocking=True))
        if augment != "none":
            x = augment_batch(x, augment, generator)
        yield x, labels[index].to(device, non_blocking=True)


def eval_batches(images: torch.Tensor, batch_size: int, device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    for start in range(0, len(images), batch_size):
        yield to_float(images[start : start + batch_size].to(device, non_blocking=True))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> floats in [0, 1]; mean/std (when used) belongs to the model's input, not here."""
    return images.float().div_(255.0)
