"""Mixed precision: `precision=fp32|bf16|fp16` (fp32 is the default, as the official code trains).

bf16 and fp16 run the forward under torch.autocast (training and evaluation alike); fp16 also scales the loss
(torch.amp.GradScaler), since its small range underflows gradients. Parameters and optimiser state stay fp32.
How S-LoRA keeps its small adapter deltas under autocast: slora/learners/slora/compute.py ``forward``.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device):
    """The context the forward runs in."""
    if precision not in DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Scales the loss under fp16; disabled (its calls plain backward and step) under fp32 and bf16."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
