"""Batches straight from uint8 tensors: seeded shuffling, even sharding over DDP ranks, augmentation on tensors.

Pixels cross to the device as uint8 (a quarter of float32's bytes) and become floats and are augmented there. On
a GPU each batch is gathered into pinned host memory and copied on a side stream one batch ahead, so the next
batch's gather and transfer overlap the step on the current one.
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
    """(pixels, labels) of each batch on ``device``. On CUDA the copy runs from pinned memory on a side stream, one
    batch ahead: the step on batch k waits only for batch k's copy (its event), while batch k+1 is gathered on the
    host and copied beside that step (the usual prefetcher; ``record_stream`` keeps the allocator from reusing the
    copy's memory while the step's stream still reads it)."""
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def start(index: torch.Tensor) -> tuple:
        x, y = images[index], labels[index]
        if stream is None:
            return x.to(device), y.to(device), None
        x, y = x.pin_memory(), y.pin_memory()
        with torch.cuda.stream(stream):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(stream)
        return x, y, copied

    def ready(x: torch.Tensor, y: torch.Tensor, copied) -> tuple[torch.Tensor, torch.Tensor]:
        if copied is not None:
            main = torch.cuda.current_stream(device)
            main.wait_event(copied)
            x.record_stream(main)
            y.record_stream(main)
        return x, y

    ahead = None
    for index in batches:
        current, ahead = ahead, start(index)
        if current is not None:
            yield ready(*current)
    if ahead is not None:
        yield ready(*ahead)


def eval_batches(images: torch.Tensor, batch_size: int, device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    for start in range(0, len(images), batch_size):
        yield to_float(images[start : start + batch_size].to(device, non_blocking=True))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> floats in [0, 1]; mean/std (when used) belongs to the model's input, not here."""
    return images.float().div_(255.0)
