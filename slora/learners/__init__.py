"""Every method by name, as ``variant=NAME`` picks it (its config group is slora/conf/variant/NAME.yaml)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Callable

from torch import nn

from ..config import RunConfig
from ..learner import Learner
from .coda_prompt import CodaPrompt
from .dualprompt import DualPrompt
from .inflora import InfLoRA
from .l2p import L2P
from .seq_ft import SequentialFineTuning
from .simplecil import SimpleCIL
from .slora import SLORA_VARIANTS, SLoRALearner

LEARNERS: dict[str, Callable[[RunConfig, nn.Module], Learner]] = {
    **{name: partial(SLoRALearner, variant=variant) for name, variant in SLORA_VARIANTS.items()},
    "simplecil": SimpleCIL,
    "seq_ft": SequentialFineTuning,
    "inflora": InfLoRA,
    "coda_prompt": CodaPrompt,
    "l2p": L2P,
    "dualprompt": DualPrompt,
}


def load_exported(folder: str | Path) -> Learner:
    """A prompt method's exported stage (``prompts.safetensors`` + ``slora.json``) rebuilt on its run's backbone,
    ready to evaluate (its forward is the two-pass prediction). Plain-ViT methods export timm folders instead."""
    from safetensors.torch import load_file

    from ..backbone import create_backbone
    from ..configure import from_dict

    folder = Path(folder)
    meta = json.loads((folder / "slora.json").read_text())
    cfg = from_dict(RunConfig, meta["config"])
    channels, size, _ = meta["image_shape"]
    learner = build_learner(cfg, create_backbone(cfg.backbone, image_size=size, in_chans=channels, seed=cfg.seed))
    learner.load_learner_state(load_file(str(folder / "prompts.safetensors")))
    return learner.eval()


def build_learner(cfg: RunConfig, vit: nn.Module) -> Learner:
    if cfg.variant not in LEARNERS:
        raise ValueError(f"unknown variant {cfg.variant!r}; valid variants: {', '.join(LEARNERS)}")
    return LEARNERS[cfg.variant](cfg, vit)


def logged_params(cfg: RunConfig, num_tasks: int) -> dict[str, str]:
    """What a sweep logs about the run's method beyond its config (Learner.logged_params)."""
    make = LEARNERS[cfg.variant]
    return getattr(make, "func", make).logged_params(cfg, num_tasks, **getattr(make, "keywords", {}))
