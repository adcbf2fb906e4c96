"""Training augmentation on batches of float tensors (so it runs on the GPU when the batch is there)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "crop_flip")


def augment_batch(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind == "crop_flip":
        return random_resized_crop_flip(images, generator)
    raise ValueError(f"unknown augmentation {kind!r}; valid: {', '.join(AUGMENTATIONS)}")


def random_resized_crop_flip(
    images: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.05, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """RandomResizedCrop(scale, ratio) + horizontal flip, per image, as one batched affine resample.

    The official transforms are RandomResizedCrop(224, scale=(0.05, 1)) and a flip (docs/method.md §9). A crop of
    relative size (w, h) centred at (cx, cy) is the affine map [[w, 0, cx], [0, h, cy]] in normalised
    coordinates; a flip negates the first column. Areas and aspect ratios are drawn like torchvision's, with
    the crop clamped inside the image instead of torchvision's 10 retries.
    """
    n = images.shape[0]
    u = torch.rand(n, 4, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    aspect = log_ratio.exp()
    width = (area * aspect).sqrt().clamp(max=1.0)
    height = (area / aspect).sqrt().clamp(max=1.0)
    cx = (1 - width) * (2 * u[:, 2] - 1)
    cy = (1 - height) * (2 * u[:, 3] - 1)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = height
    theta[:, 1, 2] = cy
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
