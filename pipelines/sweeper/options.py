"""The sweep's own keys, and the split of a sweep command line into sweep keys, run keys and ``space.KEY``s.

Keys that are SweepConfig fields configure the sweep; ``space.KEY=...`` overrides the search space; every other
key is a run key applied to each trial (benchmark=, data_root=, backbone=, epochs=, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from search_spaces import available_spaces

from .resources import amount
from slora.config import SWEEP_VAL_FRACTION, RunConfig, choice, group_options
from slora.configure import (ConfigError, describe_keys, expand_sweeps, hydra_prefix, leaf_fields, parse_options,
                             resolve_key, run_keys_help, split_overrides)

SPACE_PREFIX = "space."


@dataclass
class SweepConfig:
    variant: str = "slora"  # a variant's search space, or `all` (the variant itself searched)
    num_samples: int = 6
    max_concurrent_trials: int = 0  # 0: as many as the cluster's CPUs fit
    workers_per_trial: int = 1
    # auto: found from the cluster the sweep joins (pipelines/sweeper/resources.py); a number wins, fractions share
    cpus_per_worker: str = "auto"
    gpus_per_worker: str = "auto"  # auto: 1 (or 1/trials_per_gpu) where the cluster has GPUs, else 0
    trials_per_gpu: int = 1  # with gpus_per_worker=auto: this many trials share each GPU
    # Every selection reads the validation split (data.val_fraction, SWEEP_VAL_FRACTION unless set): the
    # objective, ASHA's ranking, the best trial, the registered model and the Pareto front.
    objective: str = choice("accuracy", "pareto")  # val_accuracy; pareto: also min stored parameters
    scheduler: str = choice("asha", "none")
    # Early stopping that keeps the winner (README "Early stopping"): `python pipelines/bench_asha.py replay=...` over
    # six full sweeps (digits on 5 search seeds, the tinyimagenet S-LoRA comparison sweep) found no setting that
    # saves 30% of the stage-epochs and keeps the full sweep's pick; ranking on the projected final accuracy (the val
    # curve at its latest slope) from 30% of the sequence, keeping half, kept it as run in all six (regret over
    # random trial orders: median 0.49, worst 1.26 points) and saved 11%. Ranking on AAA from the first stage,
    # keeping a third (the old default) saved 32% but lost 11.8 and 17.6 points as run on two digits sweeps.
    grace_period: float = 0.3  # stages every trial gets before ASHA may stop it; below 1: that share of the sequence
    asha_metric: str = choice("projected_accuracy", "average_incremental_accuracy", "accuracy")  # val_
    reduction_factor: int = 2
    # Each trial runs its config on this many seeds (seed s: training seed + s, class order seed + s), stage by
    # stage together, and reports their mean (and std): K times the training of a trial, one start-up.
    seeds_per_trial: int = 1
    # TPE's seed (the trials' own training seed is the run key `seed`, as in pipelines/run.py)
    search_seed: int = 0
    # The first trial runs the base config's own values of the searched keys (the variant's preset: a method's
    # official settings), the rest are sampled, so the pick on val never scores below the preset unless ASHA
    # stopped the preset early. Every preset value must lie in the space.
    preset_first: bool = False
    name: str = ""  # '' : sweep-<variant>-<benchmark>-<time>
    storage_path: str = ""  # '' : <cwd>/runs/ray; any pyarrow URI (s3://...) for a cluster
    tracking_uri: str = ""  # '' : sqlite file <cwd>/mlflow.db
    experiment: str = "slora-sweep"
    registered_model: str = "slora-best"
    out_dir: str = ""  # '' : <cwd>/runs/<name>
    address: str = ""  # an existing Ray cluster ('auto' or ray://...); '' starts a local one
    resume: bool = False
    save_merged: str = choice("last", "every", "none")
    max_failures: int = 1  # Train restarts per trial after a lost worker
    kill_worker_at_stage: int = 0  # fault drill for tests: SIGKILL rank 0 once at this stage


def parse_sweep_args(argv: list[str]) -> tuple[SweepConfig, dict, dict]:
    """-> (sweep config, run keys for every trial, search-space overrides). Errors before Ray starts."""
    names = {f.name for f in fields(SweepConfig)}
    sweep_pairs, run_overrides, space_overrides = {}, {}, {}
    for key, value in split_overrides(argv).items():
        if key.startswith(SPACE_PREFIX):
            space_overrides[key[len(SPACE_PREFIX):]] = value
        else:
            (sweep_pairs if key.removeprefix("++") in names else run_overrides)[key.removeprefix("++")] = value
    paths = leaf_fields(RunConfig)
    for key, value in list(run_overrides.items()):
        if key[:1] in "+~" or key in ("variant", "benchmark", "semantics", "backbone") \
                or paths[resolve_key(key, paths)].type is str:
            continue  # a string may hold commas (classes=a,b)
        points = expand_sweeps([f"{key}={value}"])
        if len(points) > 1:  # as Hydra's multirun: a grid axis, each value with num_samples trials
            space_overrides[key] = {"grid": [yaml.safe_load(p[0].split("=", 1)[1]) for p in points]}
            del run_overrides[key]
    sweep = parse_options(SweepConfig, sweep_pairs)
    if sweep.variant != "all":
        if sweep.variant not in group_options("variant"):
            raise ConfigError(f"unknown variant {sweep.variant!r}; valid variants: "
                              f"{', '.join(group_options('variant'))}, all")
        run_overrides["variant"] = sweep.variant
    val_key = next((k for k in run_overrides if k != "variant"
                    and resolve_key(hydra_prefix(k)[1], paths) == "data.val_fraction"), None)
    if val_key is None:
        run_overrides["data.val_fraction"] = str(SWEEP_VAL_FRACTION)
    elif val_key.startswith("~") or not _positive_number(run_overrides[val_key]):
        raise ConfigError(f"{val_key}={run_overrides[val_key]}: a sweep selects on a validation split, so it must "
                          f"be in (0, 1) (default {SWEEP_VAL_FRACTION}); never on test data")
    for key in ("num_samples", "workers_per_trial", "reduction_factor", "seeds_per_trial", "trials_per_gpu"):
        if getattr(sweep, key) < 1:
            raise ConfigError(f"{key}={getattr(sweep, key)}: must be >= 1")
    if not (0 < sweep.grace_period < 1 or (sweep.grace_period >= 1 and sweep.grace_period == int(sweep.grace_period))):
        raise ConfigError(f"grace_period={sweep.grace_period}: give whole stages (1, 2, ...) or a share of the "
                          "sequence below 1 (0.3: the first 30% of the stages)")
    amount("cpus_per_worker", sweep.cpus_per_worker), amount("gpus_per_worker", sweep.gpus_per_worker)
    return sweep, run_overrides, space_overrides


def grace_stages(grace_period: float, num_stages: int) -> int:
    """The stages every trial runs before ASHA may stop it: whole stages, or a share of the sequence (at least 1)."""
    stages = round(grace_period * num_stages) if grace_period < 1 else int(grace_period)
    return min(max(1, stages), num_stages)


def _positive_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return True  # not a number: the run config's own typing reports it, naming the key


def sweep_help() -> str:
    return ("Sweep keys:\n" + describe_keys(SweepConfig())
            + f"\n\nSearch spaces (variant=): {', '.join(available_spaces())} (search_spaces/*.yaml); "
            "space.KEY=[a,b] replaces a parameter's choices, space.KEY=x fixes it.\n\n"
            f"Every other key is a run key for every trial; a sweep sets data.val_fraction={SWEEP_VAL_FRACTION} "
            "unless given (selection reads val_ scores only). " + run_keys_help())


# Local files a trial reads. Made absolute in the sweep's own process: a Ray Job's trials run in its uploaded
# working directory, and a relative path there points somewhere else.
LOCAL_PATH_FIELDS = ("backbone.checkpoint", "data.data_root", "data.cache_dir", "data.classes")


def absolute_paths(run_overrides: dict) -> dict:
    paths = leaf_fields(RunConfig)
    out = dict(run_overrides)
    for key, value in run_overrides.items():
        if key in ("variant", "benchmark", "semantics", "backbone") or not value:
            continue
        remote = "://" in value or value.startswith("hf-hub:")
        path = resolve_key(hydra_prefix(key)[1], paths)
        # classes= is a file only when one exists there (else a comma list or a shipped list's bare name)
        if path not in LOCAL_PATH_FIELDS or remote or (path == "data.classes" and not Path(value).is_file()):
            continue
        prefix = "local-dir:" if value.startswith("local-dir:") else ""
        out[key] = prefix + str(Path(value.removeprefix(prefix)).expanduser().resolve())
    return out
