"""One config on several seeds: seed s trains with seed + s and meets the classes in another order.

Used by sweeps (`seeds_per_trial`) and the accuracy study, so a trial's mean and a study row mean the same thing.
"""

from __future__ import annotations

import math
from dataclasses import replace

from .config import SPLIT_SCORES, RunConfig


def seed_config(cfg: RunConfig, s: int, order_seed: int) -> RunConfig:
    """Seed s of ``cfg``: training seed cfg.seed + s, class order seed order_seed + s (order_seed: the seed the
    benchmark's own class order was drawn from, `Benchmark.order_seed`)."""
    if s == 0:
        return cfg
    return replace(cfg, seed=cfg.seed + s, data=replace(cfg.data, class_order_seed=order_seed + s))


SEED0 = "seed0_"  # the prefix of seed 0's own scores in a multi-seed trial's stage metrics


def mean_over_seeds(stages: list[dict]) -> dict[str, float]:
    """One stage's metrics of every seed -> their mean, with `<score>_std` (sample std) for each val_/test_ score
    when there are several seeds. Stage seconds add up: they are what the trial paid."""
    if len(stages) == 1:
        return dict(stages[0])
    # seed 0's own scores beside the means: the registered model and the logged merged model are seed 0's
    out = {f"{SEED0}{key}": float(stages[0][key]) for key in SPLIT_SCORES if key in stages[0]}
    for key in stages[0]:
        values = [float(stage[key]) for stage in stages]
        mean = math.fsum(values) / len(values)  # NaN stays NaN (old-class accuracy at stage 1)
        out[key] = math.fsum(values) if key == "stage_seconds" else mean
        if key in SPLIT_SCORES:
            out[f"{key}_std"] = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return out
