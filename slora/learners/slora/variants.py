"""The S-LoRA variants (docs/method.md §12): a few flags each, read by SLoRALearner (learner.py), which
slora.learners registers under each variant's name."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import AdapterConfig


@dataclass(frozen=True)
class SLoRAVariant:
    name: str
    summary: str
    decoupled: bool = True  # False: one LoRA fine-tuned through all tasks (no frozen directions, no magnitudes)
    reduce_rank: bool = False  # RR: the new direction's rank follows adapter.rank_schedule
    absorb: bool = False  # KD: absorb a direction that the old ones span into their magnitudes
    joint: bool = False  # all classes in one stage (the upper bound)

    def rank_for_task(self, task: int, adapter: AdapterConfig) -> int:
        rank = adapter.rank
        if self.reduce_rank:
            for from_task, scheduled in sorted(adapter.rank_schedule):
                if task >= from_task:
                    rank = min(adapter.rank, scheduled)
        return rank


SLORA_VARIANTS: dict[str, SLoRAVariant] = {
    v.name: v
    for v in (
        SLoRAVariant("seq_lora", "sequential LoRA: one adapter fine-tuned through all tasks (lower bound)",
                     decoupled=False),
        SLoRAVariant("slora", "S-LoRA: a new direction per task, old directions frozen, all magnitudes learn"),
        SLoRAVariant("slora_rr", "S-LoRA with rank reduction (adapter.rank_schedule)", reduce_rank=True),
        SLoRAVariant("slora_kd", "S-LoRA with knowledge distillation: spanned directions are absorbed", absorb=True),
        SLoRAVariant("slora_pp", "S-LoRA++: rank reduction and absorption together", reduce_rank=True, absorb=True),
        SLoRAVariant("joint", "all classes in one stage with the same adapter and head (upper bound)", joint=True),
    )
}

