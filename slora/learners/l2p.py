"""L2P (Wang et al., "Learning to Prompt for Continual Learning", CVPR 2022), as CODA-Prompt's code re-implements
it for its comparisons (github.com/GT-RIPL/CODA-Prompt, models/zoo.py ``L2P``, "L2P++"): a shared pool of prompts,
each with a key; the query (the frozen ViT's features) picks the top-k prompts by cosine with their keys, and the
chosen prompts, split in half, are prefix keys and values of the first block. The whole pool and the keys train on
every task; a pull term draws the chosen keys to their queries, computed as the code computes it:
``(1 - cos_sim[:, k_idx]).sum()`` indexes the (B, pool) cosines with the (B, k) chosen indices, so it sums
1 - cos(query of image b, key chosen for image b') over every pair b, b' of the batch and every j of the top k
(about B^2 k terms, not B k), times ``pull_coefficient`` (1: the code adds the term as it is). No task id at
training or test time.

Departure, said in docs/method.md §11: prefix-tuning in the first block (the code's L2P++) rather than the original
prompt-tuning of the input tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig
from .prompting import PromptLearner


class L2P(PromptLearner):
    layers = (0,)

    def __init__(self, cfg: RunConfig, vit: nn.Module):
        super().__init__(cfg, vit)
        own = cfg.l2p
        self.pool, self.length, self.top_k, self.pull = own.pool_size, own.length, own.top_k, own.pull_coefficient
        ref = self.head.weight
        self.prompts = nn.Parameter(torch.rand(self.pool, self.length, self.dim, device=ref.device))  # official uniform
        self.keys = nn.Parameter(torch.rand(self.pool, self.dim, device=ref.device))

    def select(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (indices of the top-k prompts per image, (B, pool) cosines of every query with every key)."""
        cosine = F.normalize(query, dim=1) @ F.normalize(self.keys, dim=1).T
        return cosine.topk(min(self.top_k, self.pool), dim=1).indices, cosine

    def prefixes(self, query: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        chosen, cosine = self.select(query.detach())
        # (B, B, k): the official batch x batch index (module docstring), summed
        self.extra_loss = self.pull * (1 - cosine[:, chosen]).sum() if self.training else query.new_zeros(())
        prompt = self.prompts[chosen]  # (B, k, L, C)
        half = self.length // 2
        batch = len(query)
        return {0: (prompt[:, :, :half].reshape(batch, -1, self.dim), prompt[:, :, half:].reshape(batch, -1, self.dim))}

    def trainable(self) -> dict[str, list[nn.Parameter]]:
        return {"prompts": [self.prompts, self.keys], "head": list(self.head.parameters())}

    def stored_parameters(self) -> int:
        return self.prompts.numel() + self.keys.numel()
