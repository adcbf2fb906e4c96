"""What the stage loop (slora.continual) asks of a class-incremental method on a timm ViT.

Mammoth's shape: per task ``begin_task`` (grow the head, add what the task trains), the optimiser over
``param_groups``, ``loss`` on each batch, ``end_task`` (freeze what is done; hand back the model to evaluate and
export). Every method evaluates all seen classes in one model, with no task id, and exports what it evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from .config import OptimConfig
from .heads import empty_head, grown_head, with_head
from .training import continual_loss

Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class Task:
    index: int  # 0-based
    num_new_classes: int
    known: int  # classes seen before this task: the new ones are labels known .. known + num_new_classes - 1
    # The task's training images, normalised as the model sees them and never augmented, with their labels: for
    # methods that read the data outside the optimiser (class means, input covariances). Each call is a new pass.
    data: Batches
    num_tasks: int = 1  # tasks in the whole sequence (InfLoRA's threshold schedule reads it)


class Learner(nn.Module):
    """A method. Subclasses hold the frozen ViT, their own trainable parts and a classifier over all seen classes."""

    trains: bool = True  # False: a method that only reads the data (the loop then runs no epochs)
    joint: bool = False  # True: all classes in one stage (the upper bound)
    task_rank: int = 0  # rank of the current task's low-rank update (0: the method has none)
    # how new classifier rows start, as the method's authors start them (slora.heads): SD-LoRA's and PILOT's
    # SimpleLinear unless a method's official code says otherwise
    head_init: str = "simple_linear"

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def begin_task(self, task: Task) -> None:
        raise NotImplementedError

    def param_groups(self, optim: OptimConfig, lr_scale: float = 1.0) -> list[dict]:
        """Optimiser groups ({"params", "lr", "name"}) of what trains during the current task."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, known: int) -> torch.Tensor:
        return continual_loss(logits, labels, known)

    def end_task(self, task: Task) -> tuple[nn.Module, bool]:
        """Close the task; -> (the model to evaluate and export, whether the task's parameters were absorbed)."""
        raise NotImplementedError

    def stored_parameters(self) -> int:
        """Numbers a checkpoint must keep beyond the shared pre-trained backbone and the classifier."""
        raise NotImplementedError

    def learner_state(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen pre-trained weights: enough, with them, to rebuild this learner exactly."""
        raise NotImplementedError

    def load_learner_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError


class PlainViTLearner(Learner):
    """A method whose model is the timm ViT itself and the growing head (no adapter): SimpleCIL, full fine-tuning."""

    def __init__(self, vit: nn.Module, train_backbone: bool):
        super().__init__()
        self.vit = vit.requires_grad_(train_backbone)
        self.head = empty_head(vit.num_features, next(vit.parameters()))

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.vit(images))

    def begin_task(self, task: Task) -> None:
        self.head = grown_head(self.head, task.num_new_classes, self.head_init).requires_grad_(self.trains)

    def end_task(self, task: Task) -> tuple[nn.Module, bool]:
        return with_head(self.vit, self.head), False

    def learner_state(self) -> dict[str, torch.Tensor]:
        """The head, and the backbone only when the method trains it."""
        trained = next(self.vit.parameters()).requires_grad
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if trained or not k.startswith("vit.")}

    def load_learner_state(self, state: dict[str, torch.Tensor]) -> None:
        self.head = nn.Linear(self.head.in_features, state["head.weight"].shape[0], device=self.head.weight.device,
                              dtype=self.head.weight.dtype).requires_grad_(self.trains)
        self.load_state_dict(state, strict=any(k.startswith("vit.") for k in state))
