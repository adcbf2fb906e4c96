"""DualPrompt (Wang et al., ECCV 2022), as CODA-Prompt's code re-implements it for its comparisons
(github.com/GT-RIPL/CODA-Prompt, models/zoo.py ``DualPrompt``, prompt_param 10 20 6): a G(eneral)-prompt shared by
every task, prefixes in blocks 0-1; an E(xpert)-prompt pool in blocks 2-4, one prompt and one key per task in each
block. Training uses the current task's own E-prompt (the code's ``task_id_bootstrap``) and pulls that task's keys
to the queries (1 - cosine); evaluation picks, in each E-block, the prompt whose key best matches the query (top 1),
with no task id. Each prompt is split in half into prefix keys and values.

Departures, said in docs/method.md §11: evaluation matches the query against the keys of the tasks seen so far (the code
matches against the whole pool, untrained keys included). The pull term is the code's, ``(1 - cos_sim[:,
task_id]).sum()``: summed over the batch and the E-blocks, times ``pull_coefficient`` (1, as the code adds it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig
from ..learner import Task
from .prompting import PromptLearner

G_LAYERS, E_LAYERS = (0, 1), (2, 3, 4)


class DualPrompt(PromptLearner):
    layers = G_LAYERS + E_LAYERS

    def __init__(self, cfg: RunConfig, vit: nn.Module):
        super().__init__(cfg, vit)
        own = cfg.dualprompt
        self.pool, self.length, self.g_length, self.pull = own.pool_size, own.length, own.g_length, own.pull_coefficient
        ref = self.head.weight
        for layer in self.layers:  # official init: uniform
            if layer in G_LAYERS:
                self.register_parameter(f"g_{layer}", nn.Parameter(torch.rand(self.g_length, self.dim,
                                                                              device=ref.device)))
            else:
                self.register_parameter(f"e_{layer}", nn.Parameter(torch.rand(self.pool, self.length, self.dim,
                                                                              device=ref.device)))
                self.register_parameter(f"k_{layer}", nn.Parameter(torch.rand(self.pool, self.dim, device=ref.device)))
        self.register_buffer("tasks_begun", torch.zeros((), dtype=torch.long, device=ref.device))

    @property
    def g_layers(self) -> tuple[int, ...]:
        return tuple(i for i in self.layers if i in G_LAYERS)  # a ViT shallower than 5 blocks has fewer

    @property
    def e_layers(self) -> tuple[int, ...]:
        return tuple(i for i in self.layers if i in E_LAYERS)

    def begin_task(self, task: Task) -> None:
        if task.index >= self.pool:
            raise ValueError(f"dualprompt.pool_size={self.pool}: no E-prompt left for task {task.index + 1} of "
                             f"{task.num_tasks} (give pool_size >= the number of tasks)")
        super().begin_task(task)
        self.tasks_begun.fill_(task.index + 1)

    def select(self, query: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (per image, the E-prompt chosen in ``layer``; its keys' cosines with the query over the tasks seen)."""
        seen = int(self.tasks_begun)
        cosine = F.normalize(query, dim=1) @ F.normalize(getattr(self, f"k_{layer}")[:seen], dim=1).T
        if self.training:  # the current task's own prompt (task-id bootstrap)
            return torch.full((len(query),), seen - 1, device=query.device), cosine
        return cosine.argmax(dim=1), cosine

    def prefixes(self, query: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        query = query.detach()
        out, pull = {}, query.new_zeros(())
        for layer in self.g_layers:
            prompt = getattr(self, f"g_{layer}").expand(len(query), -1, -1)
            out[layer] = (prompt[:, : self.g_length // 2], prompt[:, self.g_length // 2:])
        for layer in self.e_layers:
            chosen, cosine = self.select(query, layer)
            prompt = getattr(self, f"e_{layer}")[chosen]  # (B, L, C)
            out[layer] = (prompt[:, : self.length // 2], prompt[:, self.length // 2:])
            if self.training:
                pull = pull + (1 - cosine[:, -1]).sum()
        self.extra_loss = self.pull * pull
        return out

    def trainable(self) -> dict[str, list[nn.Parameter]]:
        prompts = [getattr(self, f"g_{layer}") for layer in self.g_layers] + [
            getattr(self, f"{kind}_{layer}") for layer in self.e_layers for kind in ("e", "k")]
        return {"prompts": prompts, "head": list(self.head.parameters())}

    def stored_parameters(self) -> int:
        """The G-prompts, and the E-prompts and keys of every task so far (the rest of the pool is not needed)."""
        return len(self.g_layers) * self.g_length * self.dim + len(self.e_layers) * int(self.tasks_begun) * (
            self.length * self.dim + self.dim)
