"""The project's value checks: what types cannot say, checked before any work, one line naming the value."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .config import RunConfig, group_options


class ConfigError(ValueError):
    pass


def check_choices(obj: Any, prefix: str = "") -> None:
    """Every string field declared with ``slora.config.choice`` holds one of its choices."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{prefix}{f.name}.")
        elif "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"{prefix}{f.name}={value!r} is not valid; choose one of "
                              f"{', '.join(f.metadata['choices'])}")


def validate(cfg: RunConfig) -> None:
    """Everything checkable before any work starts."""
    check_choices(cfg)
    if cfg.variant not in group_options("variant"):
        raise ConfigError(f"unknown variant {cfg.variant!r}; valid variants: {', '.join(group_options('variant'))}")
    positive = {
        "adapter.rank": cfg.adapter.rank,
        "optim.lr_direction": cfg.optim.lr_direction,
        "optim.lr_magnitude": cfg.optim.lr_magnitude,
        "optim.lr_head": cfg.optim.lr_head,
        "optim.lr_backbone": cfg.optim.lr_backbone,
        "optim.first_task_lr_scale": cfg.optim.first_task_lr_scale,
        "optim.epochs": cfg.optim.epochs,
        "optim.batch_size": cfg.optim.batch_size,
    }
    for path, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{path}={value}: must be > 0")
    non_negative = {
        "data.num_tasks": cfg.data.num_tasks, "data.classes_per_task": cfg.data.classes_per_task,
        "optim.first_task_epochs": cfg.optim.first_task_epochs,
        "data.max_train_per_class": cfg.data.max_train_per_class,
        "data.max_test_per_class": cfg.data.max_test_per_class, "data.image_size": cfg.data.image_size,
        "adapter.kd_threshold": cfg.adapter.kd_threshold,
    }
    for path, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{path}={value}: must be >= 0")
    for entry in cfg.adapter.rank_schedule:
        if len(entry) != 2 or entry[0] < 0 or entry[1] <= 0:
            raise ConfigError(f"adapter.rank_schedule={cfg.adapter.rank_schedule!r}: give (from_task>=0, rank>0) "
                              f"pairs, e.g. [[4,8],[8,6]]")
    if not 0 <= cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction={cfg.data.val_fraction}: must lie in [0, 1) (0: no validation split)")
    bad = [t for t in cfg.adapter.targets if t not in ("q", "k", "v")]
    if bad or not cfg.adapter.targets:
        raise ConfigError(f"adapter.targets={cfg.adapter.targets!r}: choose among q, k, v")
    if cfg.resume and not cfg.out_dir:
        raise ConfigError("resume=true: give out_dir= of the run to continue (its checkpoint.safetensors)")
    checkpoint = cfg.backbone.checkpoint
    local = checkpoint and not checkpoint.startswith("hf-hub:")
    if local and not Path(checkpoint.removeprefix("local-dir:")).expanduser().exists():
        raise ConfigError(f"backbone.checkpoint={cfg.backbone.checkpoint}: no such file or folder")
