"""What the stage loop (slora.continual) asks of a class-incremental method on a timm ViT.

Mammoth's shape: per task ``begin_task`` (grow the head, add what the task trains), the optimiser over
``param_groups``, ``loss`` on each batch, ``end_task`` (freeze what is done; hand back the model to evaluate and
export). Every method evaluates all seen classes in one model, with no task id, and exports what it evaluates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from .config import OptimConfig, RunConfig
from .export import save_timm_folder
from .heads import empty_head, grown_head, with_head
from .training import continual_loss, param_groups

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


class Learner(nn.Module, ABC):
    """A method. Subclasses hold the frozen ViT, their own trainable parts and ``head``, a classifier over all seen
    classes; this base holds what every method does alike (the head's growth and reshaping, the learning rate of
    each named parameter group, the state without the backbone, the timm-folder export)."""

    trains: bool = True  # False: a method that only reads the data (the loop then runs no epochs)
    joint: bool = False  # True: all classes in one stage (the upper bound)
    task_rank: int = 0  # rank of the current task's low-rank update (0: the method has none)
    # how new classifier rows start, as the method's authors start them (slora.heads): SD-LoRA's and PILOT's
    # SimpleLinear unless a method's official code says otherwise
    head_init: str = "simple_linear"
    head: nn.Linear

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @abstractmethod
    def begin_task(self, task: Task) -> None: ...

    @abstractmethod
    def trainable(self) -> dict[str, list[nn.Parameter]]:
        """What trains during the current task, by the name of its learning rate (slora.training.LEARNING_RATES:
        "directions", "prompts", "magnitudes", "head", "backbone")."""

    def param_groups(self, optim: OptimConfig, lr_scale: float = 1.0) -> list[dict]:
        """Optimiser groups ({"params", "lr", "name"}) of what trains during the current task."""
        return param_groups(self.trainable(), optim, lr_scale)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, known: int) -> torch.Tensor:
        return continual_loss(logits, labels, known)

    @abstractmethod
    def end_task(self, task: Task) -> tuple[nn.Module, bool]:
        """Close the task; -> (the model to evaluate and export, whether the task's parameters were absorbed)."""

    @abstractmethod
    def stored_parameters(self) -> int:
        """Numbers a checkpoint must keep beyond the shared pre-trained backbone and the classifier."""

    @classmethod
    def logged_params(cls, cfg: RunConfig, num_tasks: int, **registered) -> dict[str, str]:
        """What a sweep logs about the method beyond its config (``registered``: the registry's keywords)."""
        return {}

    # -- the head ---------------------------------------------------------------------------------------------------
    def grow_head(self, task: Task) -> None:
        self.head = grown_head(self.head, task.num_new_classes, self.head_init)

    def resize_head(self, rows: int) -> None:
        """An uninitialised head of ``rows`` classes, for a saved state to fill."""
        self.head = nn.Linear(self.head.in_features, rows, device=self.head.weight.device,
                              dtype=self.head.weight.dtype).requires_grad_(self.trains)

    # -- state and export ---------------------------------------------------------------------------------------------
    def learner_state(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen pre-trained weights: enough, with them, to rebuild this learner exactly."""
        return without_backbone(self)

    def load_learner_state(self, state: dict[str, torch.Tensor]) -> None:
        """A ``learner_state`` loaded after ``resize_head`` (methods with other growing parts reshape them first)."""
        self.resize_head(state["head.weight"].shape[0])
        missing, unexpected = self.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("vit.")] or unexpected:
            raise ValueError(f"{type(self).__name__} state does not fit: missing {missing}, unexpected {unexpected}")

    def export(self, merged: nn.Module, folder: Path, mean: list, std: list, extra: dict) -> Path:
        """The stage's model as a timm folder (config.json + model.safetensors, loadable with timm alone). A method
        whose model is not a plain ViT writes its own format, loaded by slora.learners.load_exported."""
        return save_timm_folder(merged, folder, mean, std, extra)


def without_backbone(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state without its ``vit.`` entries (the frozen pre-trained weights every run has)."""
    return {k: v.detach().contiguous() for k, v in module.state_dict().items() if not k.startswith("vit.")}


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
        self.grow_head(task)
        self.head.requires_grad_(self.trains)

    def end_task(self, task: Task) -> tuple[nn.Module, bool]:
        return with_head(self.vit, self.head), False

    def learner_state(self) -> dict[str, torch.Tensor]:
        """The head, and the backbone only when the method trains it."""
        if next(self.vit.parameters()).requires_grad:
            return {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        return without_backbone(self)

    def load_learner_state(self, state: dict[str, torch.Tensor]) -> None:
        self.resize_head(state["head.weight"].shape[0])
        self.load_state_dict(state, strict=any(k.startswith("vit.") for k in state))
