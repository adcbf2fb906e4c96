"""The registered model's MLflow pyfunc flavor, saved as "models from code": MLflow runs this file (nothing is
unpickled), with the slora package beside it (``code_paths``), so ``mlflow.pyfunc.load_model("models:/slora-best@
champion")`` and ``mlflow models serve`` need no checkout. Float32 images (N, C, H, W) with pixels in [0, 1], as
the run's loader gives them, in; logits out, or class names with ``params={"output": "classes"}``. Only MLflow
imports this file (pipelines/sweeper/tracking.py names it by path)."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from slora.serving import WEIGHTS, class_names, load_classifier  # absolute: MLflow runs this file on its own

with warnings.catch_warnings():  # MLflow asks for type hints on predict; the model's signature already says it
    warnings.simplefilter("ignore", UserWarning)

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


mlflow.models.set_model(SLoRAClassifier())
