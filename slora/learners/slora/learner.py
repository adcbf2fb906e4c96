"""S-LoRA and its variants (variants.py) as a Learner: the model's directions driven task by task."""

from __future__ import annotations

import torch
from torch import nn

from ...config import RunConfig
from ...learner import Learner, Task, without_backbone
from .model import SLoRAViT
from .variants import SLoRAVariant


class SLoRALearner(Learner):
    def __init__(self, cfg: RunConfig, vit: nn.Module, variant: SLoRAVariant):
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

    def trainable(self) -> dict[str, list[nn.Parameter]]:
        return self.model.trainable()

    def end_task(self, task: Task) -> tuple[nn.Module, bool]:
        return self.model.end_task(absorb=self.variant.absorb)

    def stored_parameters(self) -> int:
        return self.model.stored_parameters()

    def learner_state(self) -> dict[str, torch.Tensor]:
        return without_backbone(self.model)

    def load_learner_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_adapter_state(state)

    @classmethod
    def logged_params(cls, cfg: RunConfig, num_tasks: int, variant: SLoRAVariant) -> dict[str, str]:
        """The rank of each task's new direction (rank reduction lowers it)."""
        return {"adapter.ranks_used": ",".join(str(variant.rank_for_task(t, cfg.adapter)) for t in range(num_tasks))}
