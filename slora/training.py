"""One stage of training and the evaluation after it (the official loss and optimiser, docs/method.md §5)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import OptimConfig
from .precision import autocast, grad_scaler


class NonFiniteLossError(RuntimeError):
    pass


# The learning rate of each named parameter group a learner trains (Learner.trainable): prompts train at the rate
# of the low-rank directions they stand in for, so every method's main parameters are tuned by one key.
LEARNING_RATES = {"directions": "lr_direction", "prompts": "lr_direction", "magnitudes": "lr_magnitude",
                  "head": "lr_head", "backbone": "lr_backbone"}


def param_groups(named: dict[str, list[nn.Parameter]], optim: OptimConfig, lr_scale: float = 1.0) -> list[dict]:
    """Named parameter lists -> optimiser groups at ``optim.lr_<name>`` x ``lr_scale``, in one place for every
    method."""
    unknown = sorted(set(named) - set(LEARNING_RATES))
    if unknown:
        raise ValueError(f"parameter groups {unknown}: each must be one of {', '.join(LEARNING_RATES)}")
    return [{"params": params, "lr": getattr(optim, LEARNING_RATES[name]) * lr_scale, "name": name}
            for name, params in named.items()]


def build_optimizer(model: nn.Module, optim: OptimConfig, epochs: int, lr_scale: float = 1.0):
    """The optimiser over ``model.trainable()``'s named groups (each at its own learning rate, times
    ``lr_scale``, which the first task uses for the official init_lr), no weight decay, and its per-epoch schedule:
    MultiStepLR, or the cosine of the CODA-Prompt and InfLoRA code (utils/schedulers.py ``CosineSchedule`` in both),
    which ends the stage at cos(99 pi / 200) = 1.6% of the rate."""
    groups = [g for g in param_groups(model.trainable(), optim, lr_scale) if g["params"]]
    if optim.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, momentum=optim.momentum, weight_decay=0.0)
    else:
        optimizer = torch.optim.Adam(groups, weight_decay=0.0)
    if optim.schedule == "cosine":
        last = max(epochs - 1, 1)  # one epoch: the rate as given
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: math.cos(99 * math.pi * e / (200 * last)))
        return optimizer, scheduler
    milestones = [m for m in optim.milestones if m < epochs]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=optim.lr_decay)
    return optimizer, scheduler


def continual_loss(logits: torch.Tensor, labels: torch.Tensor, known: int) -> torch.Tensor:
    """Task 0: CE over all logits; later tasks: CE over the new classes' logits only (official code)."""
    if known == 0:
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits[:, known:], labels - known)


def train_epoch(forward: nn.Module, model: nn.Module, batches, optimizer, known: int, grad_clip: float,
                precision: str = "fp32") -> float:
    """`forward` is the learner as called (DDP-wrapped or not); `model` the learner underneath (its ``loss``)."""
    forward.train()
    total, count = 0.0, 0
    scaler = None
    for images, labels in batches:
        if scaler is None:
            scaler = grad_scaler(precision, images.device)
        with autocast(precision, images.device):
            loss = model.loss(forward(images), labels, known)
        if not math.isfinite(loss.item()):
            raise NonFiniteLossError(f"loss became {loss.item()} at task with {known} known classes")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * len(labels)
        count += len(labels)
    return total / max(count, 1)


@torch.no_grad()
def predict(model: nn.Module, batches, precision: str = "fp32") -> torch.Tensor:
    model.eval()
    out = []
    for images in batches:
        with autocast(precision, images.device):
            out.append(model(images).argmax(dim=1).cpu())
    return torch.cat(out)

