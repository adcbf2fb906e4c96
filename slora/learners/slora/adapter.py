"""S-LoRA directions on the fused ``attn.qkv`` projection of a timm ViT block.

Notation follows docs/method.md §1: for each adapted projection (q or v of one block)

    W = W0 + sum_k  m_k * U_k V_k / n_k   +   m_t * U_t V_t [/ n_t]

with U the up factor (out x r, zero-initialised), V the down factor (r x in), n_k a constant normaliser fixed
when the direction is frozen, and m the magnitudes, one vector shared by every projection (the model owns it).

Frozen directions of all past tasks live as two concatenated buffers per projection (``frozen_up``: out x R,
``frozen_down``: R x in), so the frozen sum is one (out x R) @ (R x in) product whatever the number of tasks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SLICES = {"q": 0, "k": 1, "v": 2}
# Guards ||U V|| when the paper semantics normalise the current direction: U starts at zero, and a direction
# that is still (numerically) zero is used raw instead of divided by ~0.
_ZERO_DIRECTION = 1e-12


def direction_norm(up: torch.Tensor, down: torch.Tensor, normaliser: str) -> torch.Tensor:
    """The normaliser of one direction U V: official code ||U||_F ||V||_F, or the paper's ||U V||_F."""
    if normaliser == "factor_norms":
        return up.norm() * down.norm()
    # ||UV||_F^2 = tr((U^T U)(V V^T)): r x r products, never the out x in matrix (docs/method.md §3).
    return ((up.T @ up) * (down @ down.T)).sum().clamp_min(0).sqrt()


class QKVDirections(nn.Module):
    """The S-LoRA state of one fused qkv Linear: frozen directions (buffers) and the current one (parameters)."""

    def __init__(self, qkv: nn.Linear, targets: tuple[str, ...]):
        super().__init__()
        bad = [t for t in targets if t not in SLICES]
        if bad or not targets:
            raise ValueError(f"adapter.targets={targets!r}: each must be one of {sorted(SLICES)}")
        self.targets = tuple(targets)
        self.dim = qkv.in_features
        if qkv.out_features != 3 * self.dim:
            raise ValueError(f"expected a fused qkv Linear ({self.dim} -> {3 * self.dim}), got {qkv}")
        factory = {"device": qkv.weight.device, "dtype": qkv.weight.dtype}
        for t in self.targets:
            self.register_buffer(f"frozen_up_{t}", torch.zeros(self.dim, 0, **factory))
            self.register_buffer(f"frozen_down_{t}", torch.zeros(0, self.dim, **factory))
            self.register_buffer(f"frozen_norms_{t}", torch.zeros(0, **factory))
            self.register_parameter(f"up_{t}", None)
            self.register_parameter(f"down_{t}", None)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def add_direction(self, rank: int) -> None:
        """A fresh current direction: U = 0 so it contributes nothing yet; V ~ kaiming_uniform(a=sqrt 5) (code)."""
        ref = self.frozen_up(self.targets[0])
        for t in self.targets:
            down = torch.empty(rank, self.dim, device=ref.device, dtype=ref.dtype)
            nn.init.kaiming_uniform_(down, a=math.sqrt(5))
            setattr(self, f"up_{t}", nn.Parameter(torch.zeros(self.dim, rank, device=ref.device, dtype=ref.dtype)))
            setattr(self, f"down_{t}", nn.Parameter(down))

    def current_norms(self, normaliser: str) -> dict[str, torch.Tensor]:
        return {t: direction_norm(self.up(t), self.down(t), normaliser).detach() for t in self.targets}

    def freeze_current(self, norms: dict[str, torch.Tensor]) -> None:
        """Append the current direction to the frozen buffers with its constant normaliser (one per target)."""
        for t in self.targets:
            setattr(self, f"frozen_up_{t}", torch.cat([self.frozen_up(t), self.up(t).detach()], dim=1))
            setattr(self, f"frozen_down_{t}", torch.cat([self.frozen_down(t), self.down(t).detach()], dim=0))
            # A direction that never trained (U = 0) adds 0 whatever its normaliser; 1 avoids 0/0 in every forward.
            norm = torch.where(norms[t] > _ZERO_DIRECTION, norms[t], torch.ones_like(norms[t]))
            setattr(self, f"frozen_norms_{t}", torch.cat([self.frozen_norms(t), norm.reshape(1)]))
        self.drop_current()

    def drop_current(self) -> None:
        for t in self.targets:
            setattr(self, f"up_{t}", None)
            setattr(self, f"down_{t}", None)

    # -- accessors ---------------------------------------------------------------------------------------------
    def frozen_up(self, t: str) -> torch.Tensor:
        return getattr(self, f"frozen_up_{t}")

    def frozen_down(self, t: str) -> torch.Tensor:
        return getattr(self, f"frozen_down_{t}")

    def frozen_norms(self, t: str) -> torch.Tensor:
        return getattr(self, f"frozen_norms_{t}")

    def up(self, t: str) -> torch.Tensor | None:
        return getattr(self, f"up_{t}")

    def down(self, t: str) -> torch.Tensor | None:
        return getattr(self, f"down_{t}")

    @property
    def has_current(self) -> bool:
        return self.up(self.targets[0]) is not None

    # -- the math ----------------------------------------------------------------------------------------------
    def scales(
        self,
        t: str,
        frozen_scales: torch.Tensor,
        owner: torch.Tensor,
        current_scale: torch.Tensor | None,
        normalise_current: bool,
        normaliser: str,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What target t's rank columns are multiplied by: m_k / n_k for each frozen column (owner maps columns to
        directions k), and the current direction's coefficient (None when there is none)."""
        column_scale = (frozen_scales / self.frozen_norms(t))[owner]
        if current_scale is None or not self.has_current:
            return column_scale, None
        if not normalise_current:
            return column_scale, current_scale
        norm = direction_norm(self.up(t), self.down(t), normaliser)
        return column_scale, current_scale / torch.where(norm > _ZERO_DIRECTION, norm, torch.ones_like(norm))

    def delta(self, t: str, column_scale: torch.Tensor, current: torch.Tensor | None) -> torch.Tensor:
        """Delta W of target t (out x in) from its ``scales``."""
        delta = (self.frozen_up(t) * column_scale) @ self.frozen_down(t)
        if current is not None:
            delta = delta + current * (self.up(t) @ self.down(t))
        return delta

    def factored_deltas(self, scales: dict[str, tuple], x: torch.Tensor,
                        frozen: bool = True) -> dict[str, torch.Tensor]:
        """x Delta W^T per target without forming Delta W: x V^T diag(s) U^T, with every target's down factors
        (frozen unless ``frozen`` is False, and current) in one GEMM, so x is read once."""
        downs, ups, columns = [], [], []
        for t in self.targets:
            column_scale, current = scales[t]
            pieces = [(self.frozen_down(t), self.frozen_up(t), column_scale)] if frozen else []
            if current is not None:
                pieces.append((self.down(t), self.up(t), current.expand(self.down(t).shape[0])))
            downs += [d for d, _, _ in pieces]
            columns += [c for _, _, c in pieces]
            ups.append(torch.cat([u for _, u, _ in pieces], dim=1))
        if not downs:
            return {}
        hidden = (x @ torch.cat(downs).T) * torch.cat(columns)
        return dict(zip(self.targets, (h @ u.T for h, u in zip(hidden.split([u.shape[1] for u in ups], -1), ups))))

    def total_rank(self) -> int:
        ranks = self.frozen_down(self.targets[0]).shape[0]
        return ranks + (self.down(self.targets[0]).shape[0] if self.has_current else 0)

    def merged_weight(self, base: torch.Tensor, deltas: dict[str, torch.Tensor]) -> torch.Tensor:
        """W0 with each target's delta added to its third of the fused weight (one GEMM in forward, as the ViT)."""
        parts = base.split(self.dim, dim=0)
        return torch.cat([parts[i] + deltas[name] if name in deltas else parts[i] for name, i in SLICES.items()])

    def direction_gram(
        self, owner_onehot: torch.Tensor, current_norms: dict[str, torch.Tensor], dtype: torch.dtype
    ) -> torch.Tensor:
        """<D_i, D_j>_F of the normalised directions [frozen..., current], summed over this layer's targets.

        <U_i V_i, U_j V_j>_F is the sum of the (i, j) block of (U^T U) * (V V^T): O(d R^2), never out x in
        (docs/method.md §7).
        owner_onehot (R x K) maps each rank column to its direction.
        """
        total = owner_onehot.new_zeros(owner_onehot.shape[1], owner_onehot.shape[1])
        for t in self.targets:
            up = torch.cat([self.frozen_up(t), self.up(t).detach()], dim=1).to(dtype)
            down = torch.cat([self.frozen_down(t), self.down(t).detach()], dim=0).to(dtype)
            norms = torch.cat([self.frozen_norms(t).to(dtype), current_norms[t].reshape(1).to(dtype)])
            block = owner_onehot.T @ ((up.T @ up) * (down @ down.T)) @ owner_onehot
            total = total + block / (norms[:, None] * norms[None, :])
        return total


def task_norms(directions: dict[str, QKVDirections], normaliser: str, shared: bool) -> dict:
    """The current direction's normaliser per layer and target, and their mean under "mean". ``shared``: every
    projection gets that mean instead, one scalar for the whole task, which is what a raw current direction (one
    magnitude for projections of different norms) needs to be stored or fitted exactly (docs/method.md §7)."""
    norms = {name: layer.current_norms(normaliser) for name, layer in directions.items()}
    mean = torch.stack([n for layer in norms.values() for n in layer.values()]).mean()
    if shared:
        norms = {name: {t: mean for t in layer} for name, layer in norms.items()}
    norms["mean"] = mean
    return norms
