"""Sequential full fine-tuning (the paper's "Full FT" row): every weight of the ViT and the growing head train on
each task in turn with the same sliced cross-entropy as S-LoRA, nothing frozen and nothing kept. A lower bound
that also shows what a frozen backbone buys."""

from __future__ import annotations

from torch import nn

from ..config import RunConfig
from ..learner import PlainViTLearner


class SequentialFineTuning(PlainViTLearner):
    def __init__(self, cfg: RunConfig, vit: nn.Module):
        super().__init__(vit, train_backbone=True)

    def trainable(self) -> dict[str, list[nn.Parameter]]:
        return {"backbone": list(self.vit.parameters()), "head": list(self.head.parameters())}

    def stored_parameters(self) -> int:
        return sum(p.numel() for p in self.vit.parameters())  # every backbone weight is the run's own
