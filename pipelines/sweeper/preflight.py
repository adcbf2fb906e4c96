"""Everything checkable before Ray starts, checked once: the base config, the search space, the data, the weights."""

from __future__ import annotations

from dataclasses import replace

from search_spaces import Param, check_reads, load_space, methods_sampling, sampled_methods, sampled_values
from slora.config import RunConfig
from slora.configure import ConfigError, compose_run
from slora.runner import start_run

from .options import SweepConfig


def prepare(sweep: SweepConfig, run_overrides: dict, space_overrides: dict) -> tuple[RunConfig, list[Param], int]:
    """-> (the base config every trial starts from, the space, stages per trial). A missing dataset or an
    unreachable hub fails here once, not in every trial."""
    base = compose_run(dict(run_overrides))
    params = load_space(sweep.variant, space_overrides)
    check_reads(params, sweep.variant)
    methods = sampled_methods(params, sweep.variant)
    for method in methods:  # each sampled method reads every run key
        compose_run({**run_overrides, "variant": method})
    for p in params:
        if p.key == "data.val_fraction" and not all(0 < v < 1 for v in sampled_values(p)):
            raise ConfigError(f"space.data.val_fraction={sampled_values(p)}: a sweep selects on a validation split, "
                              "so every value must lie in (0, 1); never on test data")
    for p in params:  # each fixed value, grid value and first choice must make a valid trial config
        if p.kind in ("choice", "value", "grid") and p.key != "variant":
            method = methods_sampling(p, methods)[0]  # variant=all: the first method that samples it
            for value in p.args if p.kind == "grid" else [p.args[0] if p.kind == "choice" else p.args]:
                compose_run({**run_overrides, "variant": method, p.key: value})
    stages = start_run(replace(base, device="cpu")).num_stages  # joint: one stage
    return base, params, stages
