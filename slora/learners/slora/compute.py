"""How S-LoRA's directions enter a forward pass, and which way is cheaper (``adapter.compute``).

The same function three ways: merged (the directions folded into the qkv weights, one GEMM per projection through
``torch.func.functional_call``, as the plain ViT runs); factored (x V^T diag(s) U^T added to the frozen GEMM's output,
which spares the backward the fused weight's full gradient while the total rank is small; in fp32 training the
frozen directions are folded, detached, into the GEMM and only their scales' gradient is computed); and, merged
under bf16/fp16 autocast, split (dW as its own GEMM, so its small entries are not rounded to W0's spacing). None
loops over past tasks in Python: the frozen directions are concatenated buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from torch import nn

from .adapter import SLICES, QKVDirections


# One element of the factored form's [q | 0 | v] add (its zero block, concatenation and gradient) costs about this
# many multiply-adds inside a GEMM (memory-bound work against compute-bound work on a CPU). Calibrated so that the
# choice follows the measured steps (docs/performance.md): fp32 training of ViT-Tiny (d 192)
# is faster merged, of ViT-B/16 (d 768) factored.
ELEMENTWISE_MACS = 128


def cheaper_compute(tokens: int, dim: int, rank: int, targets: int, grad: bool, autocast: bool) -> str:
    """"merged" or "factored", whichever costs fewer multiply-adds for one adapted qkv (beyond the frozen GEMM).

    merged:   forming Delta W (targets x d^2 R, twice more in the backward); the backward's gradient of the fused
              weight (3 d^2 per token); under autocast Delta W is its own GEMM on x (d^2 per token and target, thrice
              with its input and weight gradients: ``split``).
    factored: x V^T and (.) U^T per target (2 d R per token), three more in the backward (input gradient, and
              grad U, grad s of the columns). In fp32 training the frozen columns are folded (detached) into the
              GEMM's weight instead (d^2 R per target to form) and only their scales' gradient is computed (2 d R
              per token and target, ``factored_current``); the current direction's few columns are left out of the
              count. Outside autocast its elementwise add counts too (``ELEMENTWISE_MACS``).
    On ViT-B/16 (d 768, 197 tokens an image, batch 64, q and v) the factored form is cheaper in training below a
    total rank of 409 (0.53 d) in fp32 and 479 (0.62 d) under autocast, so the default run trains factored and its
    step grows with the tasks; evaluation in fp32 folds (pipelines/bench.py lean measures both).
    """
    merged = targets * dim * dim * rank * (3 if grad else 1)
    split = targets * tokens * dim * dim * ((3 if grad else 1) if autocast else 0)
    merged += split + (3 * tokens * dim * dim if grad and not autocast else 0)
    if grad and not autocast:
        factored = targets * (dim * dim * rank + 2 * tokens * dim * rank)
    else:
        factored = targets * tokens * dim * rank * (5 if grad else 2)
    if not autocast:  # under autocast the merged form pays the same add for its split GEMM
        factored += ELEMENTWISE_MACS * tokens * 3 * dim * (2 if grad else 1)
    return "factored" if factored < merged else "merged"


def compute_for(model: nn.Module, images: torch.Tensor) -> str:
    """How this forward adds the directions: the configured way, or under "auto" the cheaper one for this batch, rank
    and mode (a pure function of shapes, so a run is reproducible)."""
    if model.cfg.compute != "auto":
        return model.cfg.compute
    layer = model.first_layer
    patch = model.vit.patch_embed.patch_size
    tokens = images.shape[-2] // patch[0] * (images.shape[-1] // patch[1]) + model.vit.num_prefix_tokens
    return cheaper_compute(images.shape[0] * tokens, layer.dim, layer.total_rank(), len(layer.targets),
                           grad=torch.is_grad_enabled(), autocast=torch.is_autocast_enabled(images.device.type))


def forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    autocast = torch.is_autocast_enabled(images.device.type)
    if compute_for(model, images) == "factored":
        if autocast or not torch.is_grad_enabled():
            return factored(model, images)
        return factored_current(model, images)
    if autocast:
        return split(model, images)
    return model.head(functional_call(model.vit, adapted_qkv_weights(model), (images,), strict=False))


def factored(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """W0's GEMM as the frozen ViT's own, plus x V^T diag(s) U^T over every direction."""
    return with_qkv_hooks(model, images, {
        name: lambda x, out, layer=layer, s=s: plus(out, layer.factored_deltas(s, x))
        for name, (layer, s) in scales(model).items()})


def factored_current(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """fp32 training: the frozen directions, which train only through their scales, folded (detached) into the
    GEMM's weight, their scales' gradient from a backward-only product; the current direction factored."""
    per_block = scales(model)
    with torch.no_grad():
        folded = merged_qkv(model, {name: (layer, {t: layer.delta(t, s[t][0], None) for t in s})
                                   for name, (layer, s) in per_block.items()})
    return with_qkv_hooks(model, images, {
        name: lambda x, out, layer=layer, s=s: plus(frozen_scale_gradients(layer, out, x, s),
                                                    layer.factored_deltas(s, x, frozen=False))
        for name, (layer, s) in per_block.items()}, folded)


def split(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Merged under bf16/fp16 autocast: W0 + dW cast to one low-precision weight rounds dW's small entries to W0's
    spacing (docs/method.md §10, Precision), so W0's GEMM runs as the ViT's own and dW is a second GEMM on the same
    input, cast on its own scale: q, v += x dW^T."""
    return with_qkv_hooks(model, images, {
        name: lambda x, out, deltas=deltas: plus(out, {t: F.linear(x, delta) for t, delta in deltas.items()})
        for name, (_, deltas) in qkv_deltas(model).items()})


def with_qkv_hooks(model: nn.Module, images: torch.Tensor, adds: dict, weights: dict | None = None) -> torch.Tensor:
    """Run the frozen ViT (with ``weights`` in place of its own) with each adapted block's qkv output replaced by
    adds[block](x, output)."""
    hooks = [model.vit.blocks[int(name)].attn.qkv.register_forward_hook(
        lambda module, inputs, output, add=add: add(inputs[0], output)) for name, add in adds.items()]
    try:
        features = functional_call(model.vit, weights, (images,), strict=False) if weights else model.vit(images)
        return model.head(features)
    finally:
        for hook in hooks:
            hook.remove()


def plus(output: torch.Tensor, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The qkv output plus each target's part in its third, as one add of a [q | 0 | v] tensor: adding into the
    slices in place measured slower (autograd copies the whole output gradient for each sliced in-place add)."""
    if not parts:
        return output
    zero = torch.zeros_like(next(iter(parts.values())))
    return output + torch.cat([parts.get(t, zero) for t in SLICES], dim=-1)


def frozen_scale_gradients(layer: QKVDirections, output: torch.Tensor, x: torch.Tensor,
                           scales: dict[str, tuple]) -> torch.Tensor:
    """``output`` unchanged, where the frozen directions are already folded (detached) into the GEMM's weight; in the
    backward it gives their column scales (so the magnitudes) the gradient the factored form would."""
    return _FrozenScaleGradient.apply(output, x, layer, *(scales[t][0] for t in layer.targets))


def adapted_qkv_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every adapted qkv weight of an SLoRAViT, W0 + frozen directions + current direction, keyed by its ViT
    parameter name."""
    return merged_qkv(model, qkv_deltas(model))


def merged_qkv(model: nn.Module, deltas: dict[str, tuple[QKVDirections, dict[str, torch.Tensor]]]
               ) -> dict[str, torch.Tensor]:
    """W0 + each block's deltas per target, keyed by the qkv weight's ViT parameter name (for functional_call)."""
    return {f"blocks.{name}.attn.qkv.weight": layer.merged_weight(model.vit.blocks[int(name)].attn.qkv.weight, d)
            for name, (layer, d) in deltas.items()}


def qkv_deltas(model: nn.Module) -> dict[str, tuple[QKVDirections, dict[str, torch.Tensor]]]:
    """Each adapted block's directions and its delta W per target (q, v), in fp32."""
    return {name: (layer, {t: layer.delta(t, *s) for t, s in block.items()})
            for name, (layer, block) in scales(model).items()}


def scales(model: nn.Module) -> dict[str, tuple[QKVDirections, dict[str, tuple]]]:
    """Each adapted block's directions and, per target, its frozen columns' scales and current coefficient."""
    kept = model.kept_directions
    frozen_scales = model.magnitudes[:kept] + model.magnitude_offsets
    current_scale = model.magnitudes[kept] if model.has_current else None
    # Sequential LoRA is plain W0 + U V under every semantics: no normaliser, and its magnitude is a fixed 1.
    normalise_current = model.cfg.normalise_current and model.decoupled
    return {
        name: (layer, {t: layer.scales(t, frozen_scales, model.owner, current_scale, normalise_current,
                                       model.cfg.normaliser) for t in layer.targets})
        for name, layer in model.directions.items()
    }


class _FrozenScaleGradient(torch.autograd.Function):
    """Identity on a qkv output computed with W0 + sum_c s_c U_c V_c folded in; the backward adds what the fold
    hides from autograd: dL/ds_c = sum over tokens (g U)_c (x V^T)_c, 2 d R per token and target instead of the
    factored form's forward and backward through the frozen columns (the input gradient flows through the fold)."""

    @staticmethod
    def forward(ctx, output, x, layer, *column_scales):
        ctx.layer = layer
        ctx.save_for_backward(x)
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        layer, dim = ctx.layer, ctx.layer.dim
        scale_grads = []
        for t in layer.targets:
            g = grad[..., SLICES[t] * dim:(SLICES[t] + 1) * dim]
            product = (g @ layer.frozen_up(t)) * (x @ layer.frozen_down(t).T)
            scale_grads.append(product.sum(dim=tuple(range(product.dim() - 1))))
        return grad, None, None, *scale_grads
