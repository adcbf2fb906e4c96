"""Reloading a saved S-LoRA state (``SLoRAViT.adapter_state``: everything but the frozen backbone)."""

from __future__ import annotations

import torch
from torch import nn


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load an SLoRAViT's ``adapter_state`` into ``model``, first reshaping the parts that grow with the tasks (head,
    buffers, current direction) to the saved ones."""
    device = model.head.weight.device
    model.head = nn.Linear(model.head.in_features, state["head.weight"].shape[0], device=device,
                          dtype=model.head.weight.dtype) if state["head.weight"].shape[0] else model.head
    for key in ("owner", "magnitude_offsets"):
        setattr(model, key, torch.empty_like(state[key], device=device))
    model.magnitudes = nn.Parameter(torch.empty_like(state["magnitudes"], device=device),
                                   requires_grad=model.decoupled)
    for name, layer in model.directions.items():
        for t in layer.targets:
            for kind in ("frozen_up", "frozen_down", "frozen_norms"):
                setattr(layer, f"{kind}_{t}", torch.empty_like(state[f"directions.{name}.{kind}_{t}"],
                                                               device=device))
            for kind in ("up", "down"):
                key = f"directions.{name}.{kind}_{t}"
                setattr(layer, f"{kind}_{t}",
                        nn.Parameter(torch.empty_like(state[key], device=device)) if key in state else None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("vit.")]
    if missing or unexpected:
        raise ValueError(f"adapter state does not fit this model: missing {missing}, unexpected {unexpected}")
