"""Merged models in timm's own folder format (the stage checkpoint of a run is slora/checkpoint.py)."""

from __future__ import annotations

import json
from pathlib import Path

import timm
from torch import nn

# input_scaling=unit feeds pixels in [0, 1] with no mean/std: the official code's convention (docs/method.md §9)
UNIT_MEAN, UNIT_STD = 0.0, 1.0


def save_timm_folder(model: nn.Module, folder: str | Path, mean: tuple, std: tuple, extra: dict | None = None) -> Path:
    """config.json + model.safetensors, as timm.models.save_for_hf writes them: loadable with
    ``timm.create_model("local-dir:FOLDER", pretrained=True)`` and no project code. The pretrained_cfg carries
    the input size and the mean/std the run used, so ``timm.data.resolve_data_config`` gives its preprocessing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu")
    data_config = {"mean": tuple(mean), "std": tuple(std), "crop_pct": 1.0, "interpolation": "bicubic"}
    timm.models.save_for_hf(model, str(folder), safe_serialization=True, data_config=data_config)
    if extra:
        (folder / "slora.json").write_text(json.dumps(extra, indent=1))
    return folder


def load_timm_folder(folder: str | Path) -> nn.Module:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"checkpoint={folder}: not a timm folder (no config.json); expected a stage "
                                f"folder written by pipelines/run.py, e.g. runs/<run>/merged/stage_05")
    return timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True).eval()

