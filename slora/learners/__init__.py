"""Every method by name, as ``variant=NAME`` picks it (its config group is slora/conf/variant/NAME.yaml)."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from ..config import RunConfig
from ..learner import Learner
from ..variants import VARIANTS
from .inflora import InfLoRA
from .seq_ft import SequentialFineTuning
from .simplecil import SimpleCIL
from .slora import SLoRALearner

LEARNERS: dict[str, Callable[[RunConfig, nn.Module], Learner]] = {
    **{name: partial(SLoRALearner, variant=variant) for name, variant in VARIANTS.items()},
    "simplecil": SimpleCIL,
    "seq_ft": SequentialFineTuning,
    "inflora": InfLoRA,
}


def build_learner(cfg: RunConfig, vit: nn.Module) -> Learner:
    if cfg.variant not in LEARNERS:
        raise ValueError(f"unknown variant {cfg.variant!r}; valid variants: {', '.join(LEARNERS)}")
    return LEARNERS[cfg.variant](cfg, vit)
