"""Prefix-tuning on a frozen timm ViT, shared by the prompt methods (L2P, CODA-Prompt).

A prompt method needs two forward passes: the frozen ViT's own features of an image are the *query* that chooses
or weights prompts, then a second pass runs with those prompts as extra keys and values (prefixes) in the first
blocks' attention, as in CODA-Prompt's code (its ViT's ``Attention`` concatenates the prefix halves to k and v after
the qkv projection). The classifier reads the prompted pass's features.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ..config import RunConfig
from ..heads import empty_head
from ..learner import Learner, Task


def prefix_attention(attn: nn.Module, x: torch.Tensor, prefix_k: torch.Tensor, prefix_v: torch.Tensor) -> torch.Tensor:
    """timm's Attention.forward with (B, L, C) prefixes joined to its keys and values (no mask, no gate)."""
    B, N, C = x.shape
    heads, dim = attn.num_heads, attn.head_dim
    q, k, v = attn.qkv(x).reshape(B, N, 3, heads, dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    k = torch.cat([prefix_k.reshape(B, -1, heads, dim).transpose(1, 2), k], dim=2)
    v = torch.cat([prefix_v.reshape(B, -1, heads, dim).transpose(1, 2), v], dim=2)
    x = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    return attn.proj(attn.norm(x.transpose(1, 2).reshape(B, N, attn.attn_dim)))


def prompted_features(vit: nn.Module, images: torch.Tensor, prefixes: dict[int, tuple[torch.Tensor, torch.Tensor]]):
    """The ViT's pooled features with prefixes in the blocks ``prefixes`` names."""
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    for i, block in enumerate(vit.blocks):
        if i in prefixes:
            x = x + block.drop_path1(block.ls1(prefix_attention(block.attn, block.norm1(x), *prefixes[i])))
            x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        else:
            x = block(x)
    return vit.forward_head(vit.norm(x), pre_logits=True)


class PromptLearner(Learner):
    """What L2P and CODA-Prompt share: the frozen ViT, the query pass, the growing head, the export."""

    layers: tuple[int, ...] = ()
    head_init = "nn_linear"  # CODA-Prompt's code (models/zoo.py, ViTZoo.last) for CODA-Prompt, L2P and DualPrompt

    def __init__(self, cfg: RunConfig, vit: nn.Module):
        super().__init__()
        self.vit = vit.requires_grad_(False)
        self.cfg = cfg
        self.dim = vit.num_features
        self.layers = tuple(i for i in self.layers if i < len(vit.blocks))
        self.head = empty_head(self.dim, next(vit.parameters()))
        self.extra_loss = torch.zeros(())  # the method's own term from the last training forward

    def prefixes(self, query: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            query = self.vit(images)  # the first of the two passes: no prompt, no gradient
        return self.head(prompted_features(self.vit, images, self.prefixes(query)))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, known: int) -> torch.Tensor:
        return super().loss(logits, labels, known) + self.extra_loss

    def begin_task(self, task: Task) -> None:
        self.grow_head(task)

    def end_task(self, task: Task) -> tuple[nn.Module, bool]:
        self.extra_loss = torch.zeros(())  # a training forward's graph is not part of the model
        frozen = copy.deepcopy(self).eval().requires_grad_(False)
        return frozen, False

    def export(self, merged: nn.Module, folder: Path, mean: list, std: list, extra: dict) -> Path:
        """Not a plain ViT: prompts, keys and head in ``prompts.safetensors``; rebuilt on the run's backbone by
        slora.learners.load_exported (the backbone is the config's, unchanged; the images' mean and std are its
        config's too)."""
        import json

        from ..configure import to_dict

        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.cpu() for k, v in self.learner_state().items()}, str(folder / "prompts.safetensors"))
        (folder / "slora.json").write_text(json.dumps({**extra, "config": to_dict(self.cfg)}, indent=1))
        return folder
