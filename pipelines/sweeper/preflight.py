"""Everything checkable before Ray starts, checked once: the base config, the search space, the data, the weights."""

from __future__ import annotations

from dataclasses import replace

from search_spaces import Param, load_space
from slora.config import RunConfig
from slora.configure import compose_run
from slora.runner import start_run

from .options import SweepConfig


def prepare(sweep: SweepConfig, run_overrides: dict, space_overrides: dict) -> tuple[RunConfig, list[Param], int]:
    """-> (the base config every trial starts from, the space, stages per trial). A missing dataset or an
    unreachable hub fails here once, not in every trial."""
    base = compose_run(dict(run_overrides))
    params = load_space(sweep.variant, space_overrides)
    for p in params:  # each fixed value and first choice must make a valid trial config
        if p.kind in ("choice", "value"):
            first = p.args[0] if p.kind == "choice" else p.args
            compose_run({**run_overrides, p.key: first})
    stages = start_run(replace(base, device="cpu")).num_stages  # joint: one stage
    return base, params, stages
