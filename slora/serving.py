"""A stage folder as a classifier with its preprocessing, and the registered model's MLflow pyfunc flavor.

``load_classifier`` gives what pipelines/evaluate.py and the pyfunc model both run: the exported model (a timm
folder, or a prompt method's export rebuilt on its run's backbone) with the mean/std the run fed it. The pyfunc
model (``SLoRAClassifier``) is saved as "models from code" (MLflow runs this file; nothing is unpickled) with this
package beside it (``code_paths``), so ``mlflow.pyfunc.load_model("models:/slora-best@champion")`` and
``mlflow models serve`` need no checkout: float32 images (N, C, H, W) with pixels in [0, 1], as the run's loader
gives them, in; logits out, or class names with ``params={"output": "classes"}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS = "weights"  # the artifact name the stage folder is saved under in the pyfunc model


def is_prompt_export(folder: Path) -> bool:
    return (folder / "prompts.safetensors").is_file() and (folder / "slora.json").is_file()


def load_classifier(folder: str | Path) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """-> (model in eval mode, mean, std as (1, C, 1, 1)): logits = model((pixels - mean) / std)."""
    import timm  # absolute imports below: MLflow runs this file on its own, beside the slora package

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


try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # the method needs no MLflow; only the registered model does
    PythonModel = object


class SLoRAClassifier(PythonModel):
    def load_context(self, context) -> None:
        folder = Path(context.artifacts[WEIGHTS])
        self.model, self.mean, self.std = load_classifier(folder)
        self.names = class_names(folder)

    def predict(self, context, model_input, params: dict | None = None):
        if isinstance(model_input, dict):  # a named tensor schema hands {"images": array}
            model_input = model_input["images"]
        images = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            logits = self.model((images - self.mean) / self.std).float()
        if (params or {}).get("output") == "classes":
            return [self.names[i] if i < len(self.names) else str(i) for i in logits.argmax(dim=1).tolist()]
        return logits.numpy()


if __name__ != "slora.serving":  # run by MLflow as the model's code file, not imported as this package's module
    import mlflow

    mlflow.models.set_model(SLoRAClassifier())
