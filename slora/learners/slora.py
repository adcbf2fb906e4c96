"""S-LoRA and its variants (slora.variants) as a Learner: slora.model's adapter driven task by task."""

from __future__ import annotations

import torch
from torch import nn

from ..config import OptimConfig, RunConfig
from ..learner import Learner, Task
from ..model import SLoRAViT
from ..variants import Variant


class SLoRALearner(Learner):
    def __init__(self, cfg: RunConfig, vit: nn.Module, variant: Variant):
        super().__init__()
        self.variant, self.adapter_cfg, self.joint = variant, cfg.adapter, variant.joint
        self.model = SLoRAViT(vit, cfg.adapter, decoupled=variant.decoupled)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def begin_task(self, task: Task) -> None:
        self.task_rank = self.variant.rank_for_task(task.index, self.adapter_cfg)
        self.model.begin_task(task.num_new_classes, self.task_rank)

    def param_groups(self, optim: OptimConfig, lr_scale: float = 1.0) -> list[dict]:
        return self.model.param_groups(optim, lr_scale)

    def end_task(self, task: Task) -> tuple[nn.Module, bool]:
        return self.model.end_task(absorb=self.variant.absorb)

    def stored_parameters(self) -> int:
        return self.model.stored_parameters()

    def learner_state(self) -> dict[str, torch.Tensor]:
        return self.model.adapter_state()

    def load_learner_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_adapter_state(state)
