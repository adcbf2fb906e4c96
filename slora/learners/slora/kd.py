"""KD, knowledge distillation of directions (docs/method.md §7; paper Eq. 7): when the kept directions span the
current one, its contribution moves into their magnitudes and it is dropped, so the rank stops growing."""

from __future__ import annotations

import torch
from torch import nn

from .adapter import task_norms


def absorb_if_spanned(model: nn.Module) -> bool:
    """When the kept directions span the current one (residual <= tau), fold it into their magnitudes,
    alpha_k += alpha_t * dalpha_k, kept as persistent offsets, and drop it."""
    if not model.decoupled or model.kept_directions == 0:
        return False
    norms = span_norms(model)
    fit, residual = span_fit(model, norms)
    if residual > model.cfg.kd_threshold:
        return False
    model.magnitude_offsets += (model.current_coefficient(norms) * fit).to(model.magnitude_offsets.dtype)
    for layer in model.directions.values():
        layer.drop_current()
    model.magnitudes = nn.Parameter(model.magnitudes.detach()[:-1].clone())
    return True


def span_residual(model: nn.Module) -> float:
    """KD's residual for the current direction: 0 exactly when absorbing it would leave the function as is."""
    return span_fit(model, span_norms(model))[1]


def span_norms(model: nn.Module) -> dict:
    """What the current direction is divided by in KD's fit, so that the fit is of what it adds to the weights.

    A normalised current direction adds m_t U V / n per projection, with each projection's own n: the fit uses
    those. A raw one adds m_t U V: every projection is divided by one shared scalar (the mean norm), which keeps the
    fit's residual on the scale of a unit direction and, being shared, lets one coefficient per kept direction
    reproduce the raw sum exactly. A residual of 0 then means the function is preserved under every normaliser and
    magnitude switch; a direction that is a multiple of an old one per projection, with per-projection factors the
    old normalisers do not share, is not spanned and is kept.
    """
    return task_norms(model.directions, model.cfg.normaliser, shared=not model.cfg.normalise_current)


def span_fit(model: nn.Module, norms: dict) -> tuple[torch.Tensor, float]:
    """One joint least-squares fit of the new direction by the kept ones, over all projections.

    Solved in float64 from the Gram matrix: the residual is compared with tau = 9e-4, far below float32's
    cancellation error on ||D_t||^2 - b^T x.
    """
    rank = model.current_rank
    kept = model.kept_directions
    owner = torch.cat([model.owner, model.owner.new_full((rank,), kept)])
    onehot = nn.functional.one_hot(owner, kept + 1).double()
    gram = sum(
        layer.direction_gram(onehot, {t: n.double() for t, n in norms[name].items()}, dtype=torch.float64)
        for name, layer in model.directions.items()
    )
    old, cross, new = gram[:kept, :kept], gram[:kept, kept], gram[kept, kept]
    fit = torch.linalg.pinv(old) @ cross
    residual = float((new - cross @ fit).clamp_min(0).sqrt())
    return fit, residual
