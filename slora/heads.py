"""The growing linear classifier every method shares: one row per class seen so far."""

from __future__ import annotations

import torch
from torch import nn


def empty_head(in_features: int, like: torch.Tensor) -> nn.Linear:
    """A head with no class yet; begin_task grows it (nn.Linear warns when it initialises an empty weight)."""
    head = nn.Linear(in_features, 1, device=like.device, dtype=like.dtype)
    head.weight = nn.Parameter(head.weight.detach()[:0])
    head.bias = nn.Parameter(head.bias.detach()[:0])
    head.out_features = 0
    return head


def grown_head(old: nn.Linear, num_new: int) -> nn.Linear:
    """``old`` with ``num_new`` more rows: the official init for the new ones (kaiming_uniform with
    nonlinearity='linear', bias 0), the old ones copied."""
    new = nn.Linear(old.in_features, old.out_features + num_new, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        nn.init.kaiming_uniform_(new.weight, nonlinearity="linear")
        new.bias.zero_()
        new.weight[: old.out_features] = old.weight
        new.bias[: old.out_features] = old.bias
    return new


@torch.no_grad()
def with_head(vit: nn.Module, head: nn.Linear) -> nn.Module:
    """A copy of the timm ViT with ``head`` as its classifier: the plain model a method exports and evaluates."""
    import copy

    out = copy.deepcopy(vit)
    out.reset_classifier(head.out_features)
    out.head.to(device=head.weight.device, dtype=head.weight.dtype)
    out.head.load_state_dict(head.state_dict())
    out.num_classes = head.out_features
    out.pretrained_cfg = {**getattr(vit, "pretrained_cfg", {}), "num_classes": head.out_features}
    return out.eval()
