"""Sequential full fine-tuning (the paper's "Full FT" row): every weight of the ViT and the growing head train on
each task in turn with the same sliced cross-entropy as S-LoRA, nothing frozen and nothing kept. A lower bound
that also shows what a frozen backbone buys."""

from __future__ import annotations

from torch import nn

from ..config import OptimConfig, RunConfig
from ..learner import PlainViTLearner


class SequentialFineTuning(PlainViTLearner):
    def __init__(self, cfg: RunConfig, vit: nn.Module):
        super().__init__(vit, train_backbone=True)

    def param_groups(self, optim: OptimConfig, lr_scale: float = 1.0) -> list[dict]:
        return [{"params": list(self.vit.parameters()), "lr": optim.lr_backbone * lr_scale, "name": "backbone"},
                {"params": list(self.head.parameters()), "lr": optim.lr_head * lr_scale, "name": "head"}]

    def stored_parameters(self) -> int:
        return sum(p.numel() for p in self.vit.parameters())  # every backbone weight is the run's own
