"""What the benchmark commands share: the models they time (S-LoRA at a given task, a hand-written PEFT-style
LoRA), one training step or forward of each as a call, and interleaved median timing. A library: the commands
(pipelines/bench.py, bench_data.py, bench_methods.py, device_check.py) import it, it imports none of them."""

from __future__ import annotations

import copy
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from slora.config import AdapterConfig, OptimConfig
from slora.learners.slora import SLoRAViT
from slora.training import build_optimizer, continual_loss

RANK = 10
CLASSES_PER_TASK = 10
OPTIM = OptimConfig(optimizer="adam", lr_direction=1e-4, lr_magnitude=1e-4, lr_head=1e-4)
SIZES = {  # name: timm kwargs, batch size
    "cpu": (dict(img_size=32, patch_size=4, embed_dim=192, depth=4, num_heads=3), 64),
    "cpu_quick": (dict(img_size=16, patch_size=4, embed_dim=48, depth=2, num_heads=3), 8),
    "cuda": (dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12), 64),
}


class LoRAQKV(nn.Module):
    """A hand-written LoRA on the q and v thirds of a fused qkv Linear, as PEFT adds it: a side branch x V^T U^T."""

    def __init__(self, qkv: nn.Linear, rank: int):
        super().__init__()
        self.qkv, dim = qkv, qkv.in_features
        self.down = nn.Parameter(torch.randn(2, rank, dim, device=qkv.weight.device) / dim**0.5)
        self.up = nn.Parameter(torch.zeros(2, dim, rank, device=qkv.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x @ self.down[0].T @ self.up[0].T
        v = x @ self.down[1].T @ self.up[1].T
        return self.qkv(x) + torch.cat([q, torch.zeros_like(q), v], dim=-1)


class HandwrittenLoRA(nn.Module):
    def __init__(self, vit: nn.Module, rank: int, num_classes: int):
        super().__init__()
        self.vit = copy.deepcopy(vit)
        for block in self.vit.blocks:
            block.attn.qkv = LoRAQKV(block.attn.qkv, rank)
        self.head = nn.Linear(vit.num_features, num_classes, device=next(vit.parameters()).device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.vit(images))


def slora_at_task(vit: nn.Module, task: int, decoupled: bool = True, compute: str = "auto") -> SLoRAViT:
    """An S-LoRA model at 1-based `task`: the earlier directions trained (random factors) and frozen."""
    model = SLoRAViT(vit, AdapterConfig(rank=RANK, compute=compute), decoupled=decoupled)
    for _ in range(task - 1):
        model.begin_task(CLASSES_PER_TASK, RANK)
        with torch.no_grad():
            for layer in model.directions.values():
                for t in layer.targets:
                    layer.up(t).normal_()
        model.freeze_current()
    model.begin_task(CLASSES_PER_TASK, RANK)
    return model


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, autocast: bool) -> Callable[[], None]:
    if isinstance(model, SLoRAViT):
        optimizer, _ = build_optimizer(model, OPTIM, epochs=1)
        known = model.num_classes - CLASSES_PER_TASK
    else:
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        known = 0
    model.train()

    def step() -> None:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = continual_loss(model(images), labels + known, known) if known else F.cross_entropy(
                model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def forward_pass(model: nn.Module, images: torch.Tensor, autocast: bool) -> Callable[[], None]:
    model.eval()

    @torch.no_grad()
    def forward() -> None:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            model(images)

    return forward


def median_seconds(calls: dict[str, Callable[[], None]], reps: int, warmup: int, device: torch.device) -> dict:
    """Median wall time of each call, timed interleaved so that machine load affects all of them alike."""
    def timed(call) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        for call in calls.values():
            call()
    samples = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            samples[name].append(timed(call))
    return {name: statistics.median(values) for name, values in samples.items()}


# ViT-B/16 at 224 (the paper's), and a tiny stand-in for dry runs on a CPU (pipelines/device_check.py --dry-run)
LEAN_MODELS = {"vit_b16": {}, "tiny": dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)}
