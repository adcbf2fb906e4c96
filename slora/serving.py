"""A stage folder as a classifier with its preprocessing: what pipelines/evaluate.py and the registered model's MLflow
pyfunc flavor (slora/pyfunc_model.py) both run. The exported model (a timm folder, or a prompt method's export
rebuilt on its run's backbone) with the mean/std the run fed it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

WEIGHTS = "weights"  # the artifact name the stage folder is saved under in the pyfunc model


def is_prompt_export(folder: Path) -> bool:
    return (folder / "prompts.safetensors").is_file() and (folder / "slora.json").is_file()


def load_classifier(folder: str | Path) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """-> (model in eval mode, mean, std as (1, C, 1, 1)): logits = model((pixels - mean) / std)."""
    import timm

    from slora.continual import input_normalisation
    from slora.export import load_timm_folder
    from slora.learners import load_exported

    folder = Path(folder)
    if is_prompt_export(folder):  # two passes (query, then prompted), on the run's own backbone
        model = load_exported(folder)
        channels = model.vit.patch_embed.proj.in_channels
        mean, std = input_normalisation(model.vit, model.cfg.data.input_scaling, channels)
        return model, mean, std
    model = load_timm_folder(folder)
    preprocessing = timm.data.resolve_data_config(model=model)
    channels = preprocessing["input_size"][0]
    mean = torch.tensor(preprocessing["mean"], dtype=torch.float32).reshape(1, channels, 1, 1)
    std = torch.tensor(preprocessing["std"], dtype=torch.float32).reshape(1, channels, 1, 1)
    return model, mean, std


def class_names(folder: Path) -> list[str]:
    """The names of the model's classes in logit order (the stage folder's slora.json)."""
    meta = folder / "slora.json"
    names = json.loads(meta.read_text()).get("class_names", []) if meta.is_file() else []
    return [str(n) for n in names]
