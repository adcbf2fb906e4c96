"""A timm VisionTransformer with S-LoRA directions on its qkv projections and one growing linear head.

The ViT stays a plain, frozen timm module. A forward adds the adapters one of two ways (``adapter.compute``; the
same function): folded into the qkv weights once (``adapted_qkv_weights``) and run through
``torch.func.functional_call``, one GEMM per projection as in the plain model; or factored, x V^T diag(s) U^T added
to the frozen GEMM's output, which spares the backward the fused weight's full gradient while the total rank is
small. Neither loops over past tasks in Python: the frozen directions are concatenated buffers. ``merged()`` writes
the folded weights into a copy: a plain timm model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .adapter import SLICES, QKVDirections, cheaper_compute
from .config import AdapterConfig, OptimConfig
from .heads import empty_head, grown_head, with_head


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
    def has_current(self) -> bool:
        return next(iter(self.directions.values())).has_current

    def stored_parameters(self) -> int:
        """Adapter numbers a checkpoint must keep: direction factors and magnitudes (the head is common to all)."""
        factors = sum(
            b.numel() for name, b in self.directions.named_buffers() if "frozen_up" in name or "frozen_down" in name
        )
        current = sum(p.numel() for p in self.directions.parameters())
        return factors + current + self.magnitudes.numel()

    def param_groups(self, optim: OptimConfig, lr_scale: float = 1.0) -> list[dict]:
        """The current direction, the magnitudes and the head, each at its own learning rate.

        The whole head is optimised: old rows get exactly zero gradient from the sliced loss and there is no weight
        decay, so with SGD+momentum or Adam they do not move (as in the official code).
        """
        groups = [
            {"params": list(self.directions.parameters()), "lr": optim.lr_direction * lr_scale, "name": "directions"},
            {"params": list(self.head.parameters()), "lr": optim.lr_head * lr_scale, "name": "head"},
        ]
        if self.magnitudes.requires_grad:
            groups.append({"params": [self.magnitudes], "lr": optim.lr_magnitude * lr_scale, "name": "magnitudes"})
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
        """KD (docs/method.md §7): when the kept directions span the current one (residual <= tau), fold it into their
        magnitudes, alpha_k += alpha_t * dalpha_k, kept as persistent offsets, and drop it."""
        if not self.decoupled or self.kept_directions == 0:
            return False
        norms = self._span_norms()
        fit, residual = self._span_fit(norms)
        if residual > self.cfg.kd_threshold:
            return False
        self.magnitude_offsets += (self._current_coefficient(norms) * fit).to(self.magnitude_offsets.dtype)
        for layer in self.directions.values():
            layer.drop_current()
        self.magnitudes = nn.Parameter(self.magnitudes.detach()[:-1].clone())
        return True

    def span_residual(self) -> float:
        """KD's residual for the current direction: 0 exactly when absorbing it would leave the function as is."""
        return self._span_fit(self._span_norms())[1]

    def freeze_current(self) -> None:
        """Store the current direction normalised (constant normaliser) in the frozen buffers."""
        if not self.decoupled or not self.has_current:
            return  # sequential LoRA keeps training the same adapter
        norms = self._freeze_norms()
        coefficient = self._current_coefficient(norms)
        rank = next(iter(self.directions.values())).up(self.cfg.targets[0]).shape[1]
        for name, layer in self.directions.items():
            layer.freeze_current(norms[name])
        self.owner = torch.cat([self.owner, self.owner.new_full((rank,), self.kept_directions)])
        self.magnitude_offsets = torch.cat([self.magnitude_offsets, self.magnitude_offsets.new_zeros(1)])
        # Stored normalised, its magnitude becomes the coefficient of the normalised direction (alpha_t * n_t).
        values = self.magnitudes.detach().clone()
        values[-1] = coefficient
        self.magnitudes = nn.Parameter(values)

    def _current_coefficient(self, norms: dict) -> torch.Tensor:
        return self.magnitudes[-1].detach() * (1.0 if self.cfg.normalise_current else norms["mean"])

    def _magnitudes_for_new_task(self) -> torch.Tensor:
        kept = self.kept_directions
        init = self.magnitude_offsets.new_full((kept + 1,), self.cfg.magnitude_init)
        if not self.decoupled:
            return init.new_ones(1)  # plain LoRA: W0 + U V
        if self.cfg.carry_magnitudes and self.magnitudes.numel() >= kept:
            init[:kept] = self.magnitudes.detach()[:kept]
        return init

    def _freeze_norms(self) -> dict:
        """Per layer and target, the constant normaliser the current direction is stored with.

        Official: each projection's own. With a raw current direction and carried magnitudes, one shared
        magnitude cannot preserve a function whose projections have different norms, so all projections of the
        task share their mean norm: the boundary is then exact (a documented departure, docs/method.md §12).
        """
        norms = {name: layer.current_norms(self.cfg.normaliser) for name, layer in self.directions.items()}
        flat = torch.stack([n for layer in norms.values() for n in layer.values()])
        mean = flat.mean()
        if self.cfg.carry_magnitudes and not self.cfg.normalise_current:
            norms = {name: {t: mean for t in layer} for name, layer in norms.items()}
        norms["mean"] = mean
        return norms

    def _span_norms(self) -> dict:
        """What the current direction is divided by in KD's fit, so that the fit is of what it adds to the weights.

        A normalised current direction adds m_t U V / n per projection, with each projection's own n: the fit
        uses those. A raw one adds m_t U V: every projection is divided by one shared scalar (the mean norm),
        which keeps the fit's residual on the scale of a unit direction and, being shared, lets one coefficient
        per kept direction reproduce the raw sum exactly. A residual of 0 then means the function is preserved
        under every normaliser and magnitude switch; a direction that is a multiple of an old one per
        projection, with per-projection factors the old normalisers do not share, is not spanned and is kept.
        """
        norms = {name: layer.current_norms(self.cfg.normaliser) for name, layer in self.directions.items()}
        mean = torch.stack([n for layer in norms.values() for n in layer.values()]).mean()
        if not self.cfg.normalise_current:
            norms = {name: {t: mean for t in layer} for name, layer in norms.items()}
        norms["mean"] = mean
        return norms

    def _span_fit(self, norms: dict) -> tuple[torch.Tensor, float]:
        """KD (docs/method.md §7; paper Eq. 7): one joint least-squares fit of the new direction by the kept ones,
        over all projections.

        Solved in float64 from the Gram matrix: the residual is compared with tau = 9e-4, far below float32's
        cancellation error on ||D_t||^2 - b^T x.
        """
        rank = next(iter(self.directions.values())).up(self.cfg.targets[0]).shape[1]
        kept = self.kept_directions
        owner = torch.cat([self.owner, self.owner.new_full((rank,), kept)])
        onehot = nn.functional.one_hot(owner, kept + 1).double()
        gram = sum(
            layer.direction_gram(onehot, {t: n.double() for t, n in norms[name].items()}, dtype=torch.float64)
            for name, layer in self.directions.items()
        )
        old, cross, new = gram[:kept, :kept], gram[:kept, kept], gram[kept, kept]
        fit = torch.linalg.pinv(old) @ cross
        residual = float((new - cross @ fit).clamp_min(0).sqrt())
        return fit, residual

    # -- forward and merge ----------------------------------------------------------------------------------------
    def adapted_qkv_weights(self) -> dict[str, torch.Tensor]:
        """Every adapted qkv weight, W0 + frozen directions + current direction, keyed by its ViT parameter name."""
        return self._merged_qkv(self._qkv_deltas())

    def _merged_qkv(self, deltas: dict[str, tuple[QKVDirections, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
        """W0 + each block's deltas per target, keyed by the qkv weight's ViT parameter name (for functional_call)."""
        return {f"blocks.{name}.attn.qkv.weight": layer.merged_weight(self.vit.blocks[int(name)].attn.qkv.weight, d)
                for name, (layer, d) in deltas.items()}

    def _qkv_deltas(self) -> dict[str, tuple[QKVDirections, dict[str, torch.Tensor]]]:
        """Each adapted block's directions and its delta W per target (q, v), in fp32."""
        return {name: (layer, {t: layer.delta(t, *s) for t, s in scales.items()})
                for name, (layer, scales) in self._scales().items()}

    def _scales(self) -> dict[str, tuple[QKVDirections, dict[str, tuple]]]:
        """Each adapted block's directions and, per target, its frozen columns' scales and current coefficient."""
        kept = self.kept_directions
        frozen_scales = self.magnitudes[:kept] + self.magnitude_offsets
        current_scale = self.magnitudes[kept] if self.has_current else None
        # Sequential LoRA is plain W0 + U V under every semantics: no normaliser, and its magnitude is a fixed 1.
        normalise_current = self.cfg.normalise_current and self.decoupled
        return {
            name: (layer, {t: layer.scales(t, frozen_scales, self.owner, current_scale, normalise_current,
                                           self.cfg.normaliser) for t in layer.targets})
            for name, layer in self.directions.items()
        }

    def compute_for(self, images: torch.Tensor) -> str:
        """How this forward adds the directions: the configured way, or under "auto" the cheaper one for this
        batch, rank and mode (a pure function of shapes, so a run is reproducible)."""
        if self.cfg.compute != "auto":
            return self.cfg.compute
        layer = next(iter(self.directions.values()))
        patch = self.vit.patch_embed.patch_size
        tokens = images.shape[-2] // patch[0] * (images.shape[-1] // patch[1]) + self.vit.num_prefix_tokens
        return cheaper_compute(images.shape[0] * tokens, layer.dim, layer.total_rank(), len(layer.targets),
                               grad=torch.is_grad_enabled(), autocast=torch.is_autocast_enabled(images.device.type))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        autocast = torch.is_autocast_enabled(images.device.type)
        if self.compute_for(images) == "factored":
            if autocast or not torch.is_grad_enabled():
                return self._factored(images)
            return self._factored_current(images)
        if autocast:
            return self._split(images)
        return self.head(functional_call(self.vit, self.adapted_qkv_weights(), (images,), strict=False))

    def _factored(self, images: torch.Tensor) -> torch.Tensor:
        """W0's GEMM as the frozen ViT's own, plus x V^T diag(s) U^T over every direction."""
        return self._with_qkv_hooks(images, {
            name: lambda x, out, layer=layer, s=s: _plus(out, layer.factored_deltas(s, x))
            for name, (layer, s) in self._scales().items()})

    def _factored_current(self, images: torch.Tensor) -> torch.Tensor:
        """fp32 training: the frozen directions, which train only through their scales, folded (detached) into the
        GEMM's weight, their scales' gradient from a backward-only product; the current direction factored."""
        scales = self._scales()
        with torch.no_grad():
            folded = self._merged_qkv({name: (layer, {t: layer.delta(t, s[t][0], None) for t in s})
                                       for name, (layer, s) in scales.items()})
        return self._with_qkv_hooks(images, {
            name: lambda x, out, layer=layer, s=s: _plus(layer.frozen_scale_gradients(out, x, s),
                                                         layer.factored_deltas(s, x, frozen=False))
            for name, (layer, s) in scales.items()}, folded)

    def _split(self, images: torch.Tensor) -> torch.Tensor:
        """Merged under bf16/fp16 autocast: W0 + dW cast to one low-precision weight rounds dW's small entries to
        W0's spacing (docs/method.md §10, Precision), so W0's GEMM runs as the ViT's own and dW is a second GEMM on
        the same input, cast on its own scale: q, v += x dW^T."""
        return self._with_qkv_hooks(images, {
            name: lambda x, out, deltas=deltas: _plus(out, {t: F.linear(x, delta) for t, delta in deltas.items()})
            for name, (_, deltas) in self._qkv_deltas().items()})

    def _with_qkv_hooks(self, images: torch.Tensor, adds: dict, weights: dict | None = None) -> torch.Tensor:
        """Run the frozen ViT (with ``weights`` in place of its own) with each adapted block's qkv output replaced
        by adds[block](x, output)."""
        hooks = [self.vit.blocks[int(name)].attn.qkv.register_forward_hook(
            lambda module, inputs, output, add=add: add(inputs[0], output)) for name, add in adds.items()]
        try:
            features = functional_call(self.vit, weights, (images,), strict=False) if weights else self.vit(images)
            return self.head(features)
        finally:
            for hook in hooks:
                hook.remove()

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """A plain timm ViT with everything folded in: the adapters into qkv, the head as its classifier."""
        vit = with_head(self.vit, self.head)
        for name, weight in self.adapted_qkv_weights().items():
            vit.get_parameter(name).copy_(weight)
        return vit

    # -- adapter checkpoints ------------------------------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen backbone: enough, with the backbone, to rebuild this model exactly."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if not k.startswith("vit.")}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load an ``adapter_state``, first reshaping the growing parts (head, buffers, current direction)."""
        device = self.head.weight.device
        self.head = nn.Linear(self.head.in_features, state["head.weight"].shape[0], device=device,
                              dtype=self.head.weight.dtype) if state["head.weight"].shape[0] else self.head
        for key in ("owner", "magnitude_offsets"):
            setattr(self, key, torch.empty_like(state[key], device=device))
        self.magnitudes = nn.Parameter(torch.empty_like(state["magnitudes"], device=device),
                                       requires_grad=self.decoupled)
        for name, layer in self.directions.items():
            for t in layer.targets:
                for kind in ("frozen_up", "frozen_down", "frozen_norms"):
                    setattr(layer, f"{kind}_{t}", torch.empty_like(state[f"directions.{name}.{kind}_{t}"],
                                                                   device=device))
                for kind in ("up", "down"):
                    key = f"directions.{name}.{kind}_{t}"
                    setattr(layer, f"{kind}_{t}",
                            nn.Parameter(torch.empty_like(state[key], device=device)) if key in state else None)
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("vit.")]
        if missing or unexpected:
            raise ValueError(f"adapter state does not fit this model: missing {missing}, unexpected {unexpected}")


def _plus(output: torch.Tensor, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The qkv output plus each target's part in its third, as one add of a [q | 0 | v] tensor: adding into the
    slices in place measured slower (autograd copies the whole output gradient for each sliced in-place add)."""
    if not parts:
        return output
    zero = torch.zeros_like(next(iter(parts.values())))
    return output + torch.cat([parts.get(t, zero) for t in SLICES], dim=-1)
