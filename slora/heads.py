"""The growing linear classifier every method shares: one row per class seen so far.

New rows start as each method's authors start them (``Learner.head_init``), since at the rivals' official Adam rates
the scale of the first logits decides whether they train at all:
- ``simple_linear``: SD-LoRA's and LAMDA-PILOT's ``SimpleLinear`` (convs/linears.py): kaiming_uniform with
  nonlinearity='linear' (weight std 1/sqrt(d)), bias 0.
- ``nn_linear``: torch's ``nn.Linear`` default, which InfLoRA's (models/sinet_inflora.py, ``classifier_pool``) and
  CODA-Prompt's code (models/zoo.py, ``ViTZoo.last``, also for its L2P and DualPrompt) use: weight and bias uniform
  in +-1/sqrt(d) (std 1/sqrt(3d)).
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_INITS = ("simple_linear", "nn_linear")


def empty_head(in_features: int, like: torch.Tensor) -> nn.Linear:
    """A head with no class yet; begin_task grows it (nn.Linear warns when it initialises an empty weight)."""
    head = nn.Linear(in_features, 1, device=like.device, dtype=like.dtype)
    head.weight = nn.Parameter(head.weight.detach()[:0])
    head.bias = nn.Parameter(head.bias.detach()[:0])
    head.out_features = 0
    return head


def grown_head(old: nn.Linear, num_new: int, init: str = "simple_linear") -> nn.Linear:
    """``old`` with ``num_new`` more rows, initialised by ``init`` (the module docstring), the old ones copied."""
    if init not in HEAD_INITS:
        raise ValueError(f"unknown head init {init!r}; valid: {', '.join(HEAD_INITS)}")
    # nn.Linear's constructor already draws its default init (the nn_linear rule) for every row
    new = nn.Linear(old.in_features, old.out_features + num_new, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        if init == "simple_linear":
            nn.init.kaiming_uniform_(new.weight, nonlinearity="linear")
            new.bias.zero_()
        new.weight[: old.out_features] = old.weight
        new.bias[: old.out_features] = old.bias
    return new


@torch.no_grad()
def fold_qkv(vit: nn.Module, head: nn.Linear, weights: dict[str, torch.Tensor]) -> nn.Module:
    """``with_head``'s copy with ``weights`` (adapted weights by ViT parameter name) written in: how the low-rank
    methods (S-LoRA, InfLoRA) export a plain timm ViT."""
    merged = with_head(vit, head)
    for name, weight in weights.items():
        merged.get_parameter(name).copy_(weight)
    return merged


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
