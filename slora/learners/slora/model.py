"""A timm VisionTransformer with S-LoRA directions on its qkv projections and one growing linear head.

The ViT stays a plain, frozen timm module. Each adapted block's ``QKVDirections`` (adapter.py) holds its frozen
directions and the current one; this model holds what they share (the magnitudes, KD's offsets, which rank column
belongs to which direction) and the task lifecycle. How a forward adds the directions is compute.py; KD's absorption
is kd.py; reloading a saved state is state.py. ``merged()`` writes the folded weights into a copy: a plain timm
model.
"""

from __future__ import annotations

import torch
from torch import nn

from ...config import AdapterConfig
from ...heads import empty_head, fold_qkv, grown_head
from ...learner import without_backbone
from . import compute, kd
from .adapter import QKVDirections, task_norms
from .state import load_adapter_state


class SLoRAViT(nn.Module):
    def __init__(self, vit: nn.Module, adapter: AdapterConfig, decoupled: bool = True):
        super().__init__()
        if getattr(vit, "num_classes", 0) != 0:
            raise ValueError("SLoRAViT owns the classifier: create the timm ViT with num_classes=0")
        self.vit = vit.requires_grad_(False)
        self.cfg = adapter
        self.decoupled = decoupled
        depth = len(vit.blocks)
        blocks = adapter.blocks or tuple(range(depth))
        bad = [b for b in blocks if not 0 <= b < depth]
        if bad:
            raise ValueError(f"adapter.blocks={blocks!r}: block indices must lie in 0..{depth - 1}")
        self.directions = nn.ModuleDict(
            {str(b): QKVDirections(vit.blocks[b].attn.qkv, adapter.targets) for b in blocks}
        )
        ref = vit.blocks[0].attn.qkv.weight
        self.head = empty_head(vit.num_features, ref)
        # owner[c]: which kept direction rank column c of the frozen buffers belongs to
        self.register_buffer("owner", torch.zeros(0, dtype=torch.long, device=ref.device))
        # KD's absorbed coefficients, added to the magnitudes; kept when the magnitudes reset (docs/method.md §7)
        self.register_buffer("magnitude_offsets", torch.zeros(0, device=ref.device, dtype=ref.dtype))
        self.register_buffer("tasks_begun", torch.zeros((), dtype=torch.long, device=ref.device))
        self.magnitudes = nn.Parameter(torch.zeros(0, device=ref.device, dtype=ref.dtype))

    # -- bookkeeping ---------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def kept_directions(self) -> int:
        return self.magnitude_offsets.numel()

    @property
    def first_layer(self) -> QKVDirections:
        return next(iter(self.directions.values()))

    @property
    def has_current(self) -> bool:
        return self.first_layer.has_current

    @property
    def current_rank(self) -> int:
        return self.first_layer.up(self.cfg.targets[0]).shape[1]

    def stored_parameters(self) -> int:
        """Adapter numbers a checkpoint must keep: direction factors and magnitudes (the head is common to all)."""
        factors = sum(
            b.numel() for name, b in self.directions.named_buffers() if "frozen_up" in name or "frozen_down" in name
        )
        current = sum(p.numel() for p in self.directions.parameters())
        return factors + current + self.magnitudes.numel()

    def trainable(self) -> dict[str, list[nn.Parameter]]:
        """The current direction, the head and the magnitudes, by the name of their learning rate.

        The whole head is optimised: old rows get exactly zero gradient from the sliced loss and there is no weight
        decay, so with SGD+momentum or Adam they do not move (as in the official code).
        """
        groups = {"directions": list(self.directions.parameters()), "head": list(self.head.parameters())}
        if self.magnitudes.requires_grad:
            groups["magnitudes"] = [self.magnitudes]
        return groups

    # -- lifecycle (begin_task / end_task, as Mammoth's learners) ------------------------------------------------
    def begin_task(self, num_new_classes: int, rank: int) -> None:
        """Grow the head by the new classes and add a fresh direction (zero contribution until it trains)."""
        if num_new_classes <= 0:
            raise ValueError(f"num_new_classes={num_new_classes}: a task must bring at least one class")
        if rank <= 0:
            raise ValueError(f"rank={rank}: must be a positive integer")
        self.head = grown_head(self.head, num_new_classes)
        if self.decoupled or not self.has_current:
            for layer in self.directions.values():
                layer.add_direction(rank)
        self.magnitudes = nn.Parameter(self._magnitudes_for_new_task(), requires_grad=self.decoupled)
        self.tasks_begun += 1

    def end_task(self, absorb: bool = False) -> tuple[nn.Module, bool]:
        """Close the task, in the official order: KD absorbs the current direction if the kept ones span it; the
        merged plain ViT is taken as trained (current direction raw: what the stage evaluates and exports); only
        then is the direction stored normalised. Returns (merged model, whether the direction was absorbed)."""
        absorbed = absorb and self.absorb_if_spanned()
        merged = self.merged()
        self.freeze_current()  # nothing left to freeze once absorbed
        return merged, absorbed

    def absorb_if_spanned(self) -> bool:
        return kd.absorb_if_spanned(self)

    def span_residual(self) -> float:
        return kd.span_residual(self)

    def freeze_current(self) -> None:
        """Store the current direction normalised (constant normaliser) in the frozen buffers.

        Official: each projection with its own normaliser. With a raw current direction and carried magnitudes, one
        shared magnitude cannot preserve a function whose projections have different norms, so all projections of
        the task share their mean norm: the boundary is then exact (a documented departure, docs/method.md §12).
        """
        if not self.decoupled or not self.has_current:
            return  # sequential LoRA keeps training the same adapter
        norms = task_norms(self.directions, self.cfg.normaliser,
                           shared=self.cfg.carry_magnitudes and not self.cfg.normalise_current)
        coefficient = self.current_coefficient(norms)
        rank = self.current_rank
        for name, layer in self.directions.items():
            layer.freeze_current(norms[name])
        self.owner = torch.cat([self.owner, self.owner.new_full((rank,), self.kept_directions)])
        self.magnitude_offsets = torch.cat([self.magnitude_offsets, self.magnitude_offsets.new_zeros(1)])
        # Stored normalised, its magnitude becomes the coefficient of the normalised direction (alpha_t * n_t).
        values = self.magnitudes.detach().clone()
        values[-1] = coefficient
        self.magnitudes = nn.Parameter(values)

    def current_coefficient(self, norms: dict) -> torch.Tensor:
        return self.magnitudes[-1].detach() * (1.0 if self.cfg.normalise_current else norms["mean"])

    def _magnitudes_for_new_task(self) -> torch.Tensor:
        kept = self.kept_directions
        init = self.magnitude_offsets.new_full((kept + 1,), self.cfg.magnitude_init)
        if not self.decoupled:
            return init.new_ones(1)  # plain LoRA: W0 + U V
        if self.cfg.carry_magnitudes and self.magnitudes.numel() >= kept:
            init[:kept] = self.magnitudes.detach()[:kept]
        return init

    # -- forward and merge ----------------------------------------------------------------------------------------
    def adapted_qkv_weights(self) -> dict[str, torch.Tensor]:
        """Every adapted qkv weight, W0 + frozen directions + current direction, keyed by its ViT parameter name."""
        return compute.adapted_qkv_weights(self)

    def compute_for(self, images: torch.Tensor) -> str:
        return compute.compute_for(self, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return compute.forward(self, images)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """A plain timm ViT with everything folded in: the adapters into qkv, the head as its classifier."""
        return fold_qkv(self.vit, self.head, self.adapted_qkv_weights())

    # -- adapter checkpoints ------------------------------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen backbone: enough, with the backbone, to rebuild this model exactly."""
        return without_backbone(self)

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        load_adapter_state(self, state)
