"""Tiny timm ViTs and a miniature continual loop, shared by the tests (CPU, a few milliseconds each)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import timm
import torch

from slora.config import AdapterConfig, OptimConfig
from slora.learners.slora import SLoRAViT
from slora.training import build_optimizer, continual_loss
from slora.learners.slora import SLORA_VARIANTS, SLoRAVariant

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
IMAGE = (1, 8, 8)  # channels, height, width of the tiny ViT's input
CLASSES_PER_TASK = 2


def tiny_vit(seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model("vit_tiny_patch16_224", img_size=8, patch_size=4, in_chans=1, embed_dim=24,
                                 depth=2, num_heads=2, num_classes=0)


def make_model(variant: SLoRAVariant | str = "slora", seed: int = 0, **adapter) -> SLoRAViT:
    """A tiny S-LoRA model; ``adapter`` overrides AdapterConfig fields (rank 4 by default)."""
    variant = SLORA_VARIANTS[variant] if isinstance(variant, str) else variant
    cfg = AdapterConfig(**{"rank": 4, **adapter})
    return SLoRAViT(tiny_vit(seed), cfg, decoupled=variant.decoupled)


def images(n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *IMAGE, generator=torch.Generator().manual_seed(seed))


def labels_for(model: SLoRAViT, n: int = 8) -> torch.Tensor:
    """Labels of the task being trained (its classes are the last CLASSES_PER_TASK head rows)."""
    return model.num_classes - CLASSES_PER_TASK + torch.arange(n) % CLASSES_PER_TASK


OPTIM = OptimConfig(optimizer="adam", lr_direction=1e-2, lr_magnitude=1e-2, lr_head=1e-2)


def train_steps(model: SLoRAViT, steps: int = 2, optim: OptimConfig = OPTIM) -> None:
    """A few optimiser steps on the current task, with the continual loss of slora.training."""
    optimizer, _ = build_optimizer(model, optim, epochs=1)
    x, known = images(), model.num_classes - CLASSES_PER_TASK
    model.train()
    for _ in range(steps):
        loss = continual_loss(model(x), labels_for(model, len(x)), known)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()


def randomise_current(model: SLoRAViT, seed: int = 0) -> None:
    """Give the current direction random factors (U is zero at begin_task), as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.directions.values():
            for t in layer.targets:
                layer.up(t).copy_(torch.randn(layer.up(t).shape, generator=generator))
                layer.down(t).copy_(torch.randn(layer.down(t).shape, generator=generator))


def run_tasks(model: SLoRAViT, variant: SLoRAVariant, tasks: int, steps: int = 2) -> None:
    """Tasks on the model's own lifecycle (begin_task, a few steps, end_task), as slora.continual drives it."""
    for task in range(tasks):
        torch.manual_seed(task)
        model.begin_task(CLASSES_PER_TASK, variant.rank_for_task(task, model.cfg))
        train_steps(model, steps)
        model.end_task(absorb=variant.absorb)


def logits(model: torch.nn.Module, x: torch.Tensor | None = None) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(images() if x is None else x)


ALL_VARIANTS = pytest.mark.parametrize("variant", list(SLORA_VARIANTS.values()), ids=list(SLORA_VARIANTS))
DECOUPLED_VARIANTS = pytest.mark.parametrize(
    "variant", [v for v in SLORA_VARIANTS.values() if v.decoupled],
    ids=[n for n, v in SLORA_VARIANTS.items() if v.decoupled]
)
