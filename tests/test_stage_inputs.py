"""What one stage iterates: the training batches (every image once per epoch, seeded, labels with their images,
DDP ranks even) and the learning rate of each epoch."""

from __future__ import annotations

import math

import pytest
import torch

from slora.config import OptimConfig
from slora.data.batches import train_batches
from slora.training import build_optimizer
from tiny import make_model


def epoch(seed: int, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    return list(train_batches(images, torch.arange(10) + 100, batch_size=4, seed=seed, **kwargs))


def test_an_epoch_holds_every_image_once_with_its_label_in_a_seeded_order():
    batches = epoch(seed=3)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    pixels = torch.cat([(x[:, 0, 0, 0] * 255).round().long() for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert sorted(pixels.tolist()) == list(range(10)) and torch.equal(labels, pixels + 100)
    again, other = epoch(seed=3), epoch(seed=4)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(batches, other))


def test_ddp_ranks_get_the_same_number_of_batches_and_cover_the_epoch():
    ranks = [epoch(seed=0, ddp_rank=r, world_size=3) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1
    labels = torch.cat([y for rank in ranks for _, y in rank])
    assert set(labels.tolist()) == set(range(100, 110)) and len(labels) == 12  # padded to a multiple of 3


@pytest.mark.parametrize("schedule, epochs, factors", [
    ("multistep", 4, [1.0, 1.0, 0.1, 0.1]),  # milestones [2]
    ("cosine", 3, [1.0, math.cos(99 * math.pi / 400), math.cos(99 * math.pi / 200)]),
    ("cosine", 1, [1.0]),
])
def test_each_epoch_trains_at_its_schedules_rate(schedule, epochs, factors):
    """cosine: the CODA-Prompt / InfLoRA CosineSchedule, lr cos(99 pi e / (200 (K - 1))) at epoch e of K."""
    model = make_model("slora")
    model.begin_task(2, 4)
    optim = OptimConfig(lr_direction=0.5, schedule=schedule, milestones=[2])
    optimizer, scheduler = build_optimizer(model, optim, epochs)
    rates = []
    for _ in range(epochs):
        rates.append(next(g["lr"] for g in optimizer.param_groups if g["name"] == "directions"))
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.5 * f for f in factors])
