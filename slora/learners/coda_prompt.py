"""CODA-Prompt (Smith et al., CVPR 2023; official code github.com/GT-RIPL/CODA-Prompt, models/zoo.py ``CodaPrompt``).

In each of the first five blocks a pool of prompt components P_m (length L), keys K_m and attention vectors A_m.
The query q (the frozen ViT's features of the image) weights every component by the cosine of q * A_m with K_m;
the weighted sum of components is split in half into prefix keys and values. Each task owns pool / T components:
they are re-initialised orthogonal (Gram-Schmidt) to the earlier ones when the task begins, and only they train;
earlier components, keys and attention vectors are frozen. Evaluation uses every component seen so far, with no
task id. An optional orthogonality penalty (``ortho_mu``, 0 in the official ImageNet-R and CIFAR configs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig
from ..learner import Task
from .prompting import PromptLearner


class CodaPrompt(PromptLearner):
    layers = (0, 1, 2, 3, 4)

    def __init__(self, cfg: RunConfig, vit: nn.Module):
        super().__init__(cfg, vit)
        own = cfg.coda_prompt
        self.pool, self.length, self.ortho_mu = own.pool_size, own.length, own.ortho_mu
        ref = self.head.weight
        for layer in self.layers:  # official init: uniform, then orthogonalised per task as components come into use
            self.register_parameter(f"p_{layer}", nn.Parameter(torch.rand(self.pool, self.length, self.dim,
                                                                          device=ref.device)))
            self.register_parameter(f"k_{layer}", nn.Parameter(torch.rand(self.pool, self.dim, device=ref.device)))
            self.register_parameter(f"a_{layer}", nn.Parameter(torch.rand(self.pool, self.dim, device=ref.device)))
        self.register_buffer("tasks_begun", torch.zeros((), dtype=torch.long, device=ref.device))
        self.register_buffer("per_task", torch.zeros((), dtype=torch.long, device=ref.device))  # pool / T

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        per_task = self.pool // task.num_tasks
        if per_task < 1 or task.index >= task.num_tasks:
            raise ValueError(f"coda_prompt.pool_size={self.pool}: no components left for task {task.index + 1} of "
                             f"{task.num_tasks}")
        self.per_task.fill_(per_task)
        new = slice(task.index * per_task, (task.index + 1) * per_task)
        with torch.no_grad():
            for layer in self.layers:
                for name in ("p", "k", "a"):
                    param = getattr(self, f"{name}_{layer}")
                    flat = param.view(self.pool, -1)
                    flat[new] = gram_schmidt(flat[: new.start], flat[new].shape)
        self.tasks_begun.fill_(task.index + 1)

    def _active(self, name: str, layer: int, training: bool) -> torch.Tensor:
        """Components in use: earlier tasks' frozen (detached), the current task's trainable."""
        param = getattr(self, f"{name}_{layer}")
        end = int(self.tasks_begun) * int(self.per_task)
        start = end - int(self.per_task)
        if training:
            return torch.cat([param[:start].detach(), param[start:end]])
        return param[:end]

    def prefixes(self, query: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        out, penalty = {}, query.new_zeros(())
        for layer in self.layers:
            p, k, a = (self._active(name, layer, self.training) for name in ("p", "k", "a"))
            weights = torch.einsum("bkd,kd->bk", F.normalize(query.unsqueeze(1) * a, dim=2), F.normalize(k, dim=1))
            prompt = torch.einsum("bk,kld->bld", weights, p)
            half = self.length // 2
            out[layer] = (prompt[:, :half], prompt[:, half:])
            if self.training and self.ortho_mu > 0:
                penalty = penalty + self.ortho_mu * sum(_ortho(t.reshape(t.shape[0], -1)) for t in (k, a, p))
        self.extra_loss = penalty
        return out

    def trainable(self) -> dict[str, list[nn.Parameter]]:
        return {"prompts": [getattr(self, f"{n}_{layer}") for layer in self.layers for n in ("p", "k", "a")],
                "head": list(self.head.parameters())}

    def stored_parameters(self) -> int:
        """Components, keys and attention vectors of every task so far (the unused rest of the pool is not needed)."""
        used = int(self.tasks_begun) * int(self.per_task)
        return len(self.layers) * used * (self.length * self.dim + 2 * self.dim)


def gram_schmidt(old: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``shape[0]`` new unit rows after ``old``'s, as the official ``CodaPrompt.gram_schmidt`` (models/zoo.py) makes
    them: the *classical* form. Each row is a fresh normal draw minus its projections onto every earlier row (the old
    ones as trained, the new ones before normalisation), all taken from the same draw; the rows are normalised at the
    end. Old rows have trained away from orthogonality, so this is not the modified form (which projects the running
    remainder): the two differ by about 1e-2 on the rows."""
    rows = [row for row in old]
    for _ in range(shape[0]):
        draw = torch.randn(shape[1], device=old.device, dtype=old.dtype)
        rows.append(draw - sum(((draw @ u) / (u @ u) * u for u in rows), torch.zeros_like(draw)))
    new = torch.stack(rows[len(old):])
    return new / new.norm(dim=1, keepdim=True)


def _ortho(t: torch.Tensor) -> torch.Tensor:
    return ((t @ t.T - torch.eye(t.shape[0], device=t.device)) ** 2).mean()
