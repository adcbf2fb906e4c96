"""SimpleCIL (Zhou et al., "Revisiting class-incremental learning with pre-trained models", IJCV 2024; LAMDA-PILOT's
``simplecil``): no training at all. Each class is the mean of its training images' features under the frozen
backbone, and a cosine classifier against those prototypes decides: the strong frozen-backbone reference.

The cosine classifier is exported as a plain timm head: rows = unit-length prototypes, bias 0. Its logits are the
cosines times the feature's norm, a positive factor per image, so the argmax (the prediction) is the cosine one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig
from ..learner import PlainViTLearner, Task


class SimpleCIL(PlainViTLearner):
    trains = False

    def __init__(self, cfg: RunConfig, vit: nn.Module):
        super().__init__(vit, train_backbone=False)

    def trainable(self) -> dict[str, list[nn.Parameter]]:
        return {}

    @torch.no_grad()
    def end_task(self, task: Task) -> tuple[nn.Module, bool]:
        self.vit.eval()
        sums = self.head.weight.new_zeros(task.num_new_classes, self.head.in_features, dtype=torch.float64)
        counts = sums.new_zeros(task.num_new_classes)
        for images, labels in task.data():
            features = self.vit(images).double()
            index = (labels - task.known).to(features.device)
            sums.index_add_(0, index, features)
            counts.index_add_(0, index, torch.ones_like(index, dtype=sums.dtype))
        prototypes = sums / counts.clamp_min(1).unsqueeze(1)
        new = slice(task.known, task.known + task.num_new_classes)
        self.head.weight[new] = F.normalize(prototypes, dim=1).to(self.head.weight.dtype)
        self.head.bias[new] = 0
        return super().end_task(task)

    def stored_parameters(self) -> int:
        return 0  # the prototypes are the classifier, which every method has
