"""InfLoRA (Liang & Li, "InfLoRA: Interference-free low-rank adaptation for continual learning", CVPR 2024; official
code github.com/liangyanshuo/InfLoRA, methods/inflora.py and models/vit_inflora.py).

Per task, a LoRA pair B_t A_t on the key and value projections of every block. The down factor A_t is not trained:
it is designed before the task from the input covariance C_t = mean over tokens of x x^T of each attention input,
with the old tasks' input subspace projected out, so A_t x ~ 0 for old inputs (no interference); only B_t (zero
init) and the new classifier rows train. After the task DualGPM adds the directions that hold a fraction eps_t of
the new inputs' energy to each block's basis (eps_t rises from threshold_begin to threshold_end over the tasks);
a block whose basis would need half the dimensions or more keeps its orthogonal complement instead ("retain").

Old pairs are frozen, so they are kept folded: one delta per block for k and one for v. The merged model is a plain
timm ViT. Departures from the official code (docs/method.md §11): after the first task a block keeps the fewest
directions that hold eps_t of the energy, as Eq. 5 says (the official code keeps one fewer, `np.sum(cumsum <
threshold)`, next to a `#+1` comment); a "retain" block stores the complement after the first task (the official
code stores the kept directions there, which its later updates then treat as the free space); the learning rate
follows the benchmark's schedule rather than InfLoRA's cosine decay.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from ..config import RunConfig
from ..heads import empty_head, fold_qkv
from ..learner import Learner, Task

K, V = 1, 2  # the key and value thirds of the fused qkv projection


class InfLoRA(Learner):
    head_init = "nn_linear"  # official models/sinet_inflora.py: one nn.Linear per task in classifier_pool

    def __init__(self, cfg: RunConfig, vit: nn.Module):
        super().__init__()
        self.vit = vit.requires_grad_(False)
        self.task_rank = cfg.adapter.rank
        self.begin_threshold, self.end_threshold = cfg.inflora.threshold_begin, cfg.inflora.threshold_end
        ref = vit.blocks[0].attn.qkv.weight
        self.dim = ref.shape[1]
        self.head = empty_head(vit.num_features, ref)
        self.depth = len(vit.blocks)
        zeros = lambda *shape: torch.zeros(*shape, device=ref.device, dtype=ref.dtype)  # noqa: E731
        for b in range(self.depth):
            self.register_buffer(f"delta_k_{b}", zeros(self.dim, self.dim))  # sum over old tasks of B_s A_s
            self.register_buffer(f"delta_v_{b}", zeros(self.dim, self.dim))
            self.register_buffer(f"basis_{b}", zeros(self.dim, 0))  # DualGPM: old input space, or its complement
            self.register_buffer(f"retain_{b}", torch.zeros((), dtype=torch.bool, device=ref.device))
        self.register_buffer("tasks_done", torch.zeros((), dtype=torch.long, device=ref.device))
        self.down = [None] * self.depth  # A_t per block (designed, fixed) while a task trains
        self.up_k = nn.ParameterList()
        self.up_v = nn.ParameterList()

    def adapted_qkv_weights(self) -> dict[str, torch.Tensor]:
        weights = {}
        for b, block in enumerate(self.vit.blocks):
            delta_k, delta_v = getattr(self, f"delta_k_{b}"), getattr(self, f"delta_v_{b}")
            if len(self.up_k):
                delta_k = delta_k + self.up_k[b] @ self.down[b]
                delta_v = delta_v + self.up_v[b] @ self.down[b]
            q, k, v = block.attn.qkv.weight.split(delta_k.shape[0])  # q unchanged: no zero block to add
            weights[f"blocks.{b}.attn.qkv.weight"] = torch.cat([q, k + delta_k, v + delta_v])
        return weights

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(functional_call(self.vit, self.adapted_qkv_weights(), (images,), strict=False))

    # -- the task lifecycle ---------------------------------------------------------------------------------------
    def begin_task(self, task: Task) -> None:
        self.grow_head(task)
        covariances = self._input_covariances(task)
        r = self.task_rank
        for b, cov in enumerate(covariances):
            basis = getattr(self, f"basis_{b}").double()
            if basis.shape[1]:  # project out the old tasks' input space (or onto the free space, when retained)
                projected = basis @ (basis.T @ cov)
                cov = projected if bool(getattr(self, f"retain_{b}")) else cov - projected
            u, _, _ = torch.linalg.svd(cov, full_matrices=False)
            self.down[b] = (u[:, :r].T / math.sqrt(3)).to(self.head.weight.dtype)
        ref = self.head.weight
        self.up_k = nn.ParameterList(nn.Parameter(ref.new_zeros(self.dim, r)) for _ in range(self.depth))
        self.up_v = nn.ParameterList(nn.Parameter(ref.new_zeros(self.dim, r)) for _ in range(self.depth))

    def trainable(self) -> dict[str, list[nn.Parameter]]:
        return {"directions": [*self.up_k, *self.up_v], "head": list(self.head.parameters())}

    @torch.no_grad()
    def end_task(self, task: Task) -> tuple[nn.Module, bool]:
        merged = fold_qkv(self.vit, self.head, self.adapted_qkv_weights())
        for b in range(self.depth):  # fold the trained pair: from now on it is part of the frozen deltas
            getattr(self, f"delta_k_{b}").add_(self.up_k[b] @ self.down[b])
            getattr(self, f"delta_v_{b}").add_(self.up_v[b] @ self.down[b])
        self.up_k, self.up_v, self.down = nn.ParameterList(), nn.ParameterList(), [None] * self.depth
        # DualGPM from the inputs as the trained model sees them (the official code's second pass)
        threshold = self.begin_threshold + (self.end_threshold - self.begin_threshold) * task.index / task.num_tasks
        for b, cov in enumerate(self._input_covariances(task)):
            self._update_basis(b, cov, threshold)
        self.tasks_done += 1
        return merged, False

    @torch.no_grad()
    def _input_covariances(self, task: Task) -> list[torch.Tensor]:
        """Per block, mean over every token of the task's images of x x^T, x the attention input (float64)."""
        sums = [torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.head.weight.device)
                for _ in range(self.depth)]
        counts = [0] * self.depth

        def collect(b):
            def hook(module, args):
                x = args[0].detach().reshape(-1, self.dim).double()
                sums[b].add_(x.T @ x)
                counts[b] += x.shape[0]
            return hook

        handles = [block.attn.register_forward_pre_hook(collect(b)) for b, block in enumerate(self.vit.blocks)]
        try:
            self.vit.eval()
            weights = self.adapted_qkv_weights()
            for images, _ in task.data():
                functional_call(self.vit, weights, (images,), strict=False)
        finally:
            for handle in handles:
                handle.remove()
        return [s / max(n, 1) for s, n in zip(sums, counts)]

    def _update_basis(self, b: int, cov: torch.Tensor, threshold: float) -> None:
        """DualGPM (official update_DualGPM; energies are squared singular values of the covariance, as there)."""
        basis, retain = getattr(self, f"basis_{b}").double(), bool(getattr(self, f"retain_{b}"))
        total = (torch.linalg.svdvals(cov) ** 2).sum()
        if self.tasks_done == 0:
            u, s, _ = torch.linalg.svd(cov, full_matrices=False)
            # the fewest directions holding eps_t of the energy (GPM's criterion, InfLoRA Eq. 5)
            r = min(int((torch.cumsum(s**2 / total, 0) < threshold).sum()) + 1, self.dim)
            retain = r >= self.dim / 2
            basis = u[:, r:] if retain else u[:, :r]  # "retain": keep the complement, the space still free
        elif not retain:
            u, s, _ = torch.linalg.svd(cov - basis @ (basis.T @ cov), full_matrices=False)
            ratio, captured, r = s**2 / total, 1 - (s**2).sum() / total, 0
            while r < len(ratio) and captured < threshold:
                captured, r = captured + ratio[r], r + 1
            basis = torch.cat([basis, u[:, :r]], dim=1)[:, : self.dim]
        else:
            u, s, _ = torch.linalg.svd(basis @ (basis.T @ cov), full_matrices=False)
            ratio, free, r = s**2 / total, (s**2).sum() / total, 0
            while r < len(ratio) and free >= 1 - threshold:
                free, r = free - ratio[r], r + 1
            if r:  # the free space loses the directions the new task now uses
                rest = basis - u[:, :r] @ (u[:, :r].T @ basis)
                basis = torch.linalg.svd(rest, full_matrices=False)[0][:, : basis.shape[1] - r]
        setattr(self, f"basis_{b}", basis.to(self.head.weight.dtype))
        getattr(self, f"retain_{b}").fill_(retain)

    # -- bookkeeping ------------------------------------------------------------------------------------------------
    def stored_parameters(self) -> int:
        """Per task and block A_t (r x d) and B_t for k and v (d x r each), plus the DualGPM bases."""
        tasks = int(self.tasks_done) + (1 if len(self.up_k) else 0)
        bases = sum(getattr(self, f"basis_{b}").numel() for b in range(self.depth))
        return tasks * self.depth * 3 * self.task_rank * self.dim + bases

    def load_learner_state(self, state: dict[str, torch.Tensor]) -> None:
        for b in range(self.depth):  # the bases grow with the tasks
            setattr(self, f"basis_{b}", torch.empty_like(state[f"basis_{b}"], device=self.head.weight.device))
        super().load_learner_state(state)
