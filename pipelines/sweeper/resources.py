"""What each trial gets, found from the Ray cluster the sweep joins rather than configured.

``gpus_per_worker=auto`` is one GPU a Train worker when the cluster has GPUs (1/K with ``trials_per_gpu=K``: small
backbones share a GPU as fractional GPUs), else none; ``cpus_per_worker=auto`` splits the cluster's CPUs over the
trials that run at once, one CPU left for Ray's drivers, or 0.49 on a CPU-only cluster (two single-worker trials side
by side on a 2-core laptop, trial drivers never starved: docs/platform.md §3). A number given for either wins.
Ray's own scheduling packs the bundles; these numbers are what each trial asks for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from slora.configure import ConfigError

AUTO = "auto"
CPU_ONLY_SHARE = 0.49  # a worker's CPUs on a CPU-only cluster: fractional, so drivers (0.01 CPU) always fit
DRIVER_CPUS = 1.0  # left to Ray's trial drivers and Train controllers on a GPU node


@dataclass(frozen=True)
class TrialResources:
    concurrent: int  # trials at a time
    cpus_per_worker: float
    gpus_per_worker: float

    @property
    def threads(self) -> int:
        """torch threads per worker: one per whole CPU it holds."""
        return max(1, int(self.cpus_per_worker))

    def describe(self, cluster_cpus: float, cluster_gpus: float, workers_per_trial: int) -> str:
        each = f"{self.gpus_per_worker:g} GPU + {self.cpus_per_worker:g} CPUs" if self.gpus_per_worker else \
            f"{self.cpus_per_worker:g} CPUs, no GPU"
        workers = "each" if workers_per_trial == 1 else f"for each of its {workers_per_trial} workers"
        return (f"{cluster_gpus:g} GPUs, {cluster_cpus:g} CPUs: {self.concurrent} trials at a time, "
                f"{each} {workers}")


def amount(key: str, text: str) -> float | None:
    """A resource key's value: None for auto, else a non-negative number; a clear error otherwise."""
    if str(text).strip().lower() == AUTO:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{key}={text}: give {AUTO} or a number (fractions share a device)") from None
    if value < 0 or (key == "cpus_per_worker" and value == 0):
        raise ConfigError(f"{key}={text}: must be {'> 0' if key == 'cpus_per_worker' else '>= 0'}, or {AUTO}")
    return value


def plan(sweep, cluster_cpus: float, cluster_gpus: float) -> TrialResources:
    """The resources of one trial's workers and how many trials run at once (sweep: a SweepConfig)."""
    workers = sweep.workers_per_trial
    gpus = amount("gpus_per_worker", sweep.gpus_per_worker)
    if gpus is None:
        gpus = 1.0 / sweep.trials_per_gpu if cluster_gpus > 0 else 0.0
    cpus = amount("cpus_per_worker", sweep.cpus_per_worker)
    if sweep.max_concurrent_trials:
        concurrent = sweep.max_concurrent_trials
    elif gpus > 0:
        concurrent = max(1, math.floor(cluster_gpus / (gpus * workers) + 1e-9))
    else:  # each worker runs one torch thread per whole CPU, so count real cores
        concurrent = max(1, int(cluster_cpus // (workers * max(cpus or CPU_ONLY_SHARE, 1.0))))
    if cpus is None:
        if gpus > 0:
            share_of = min(concurrent, sweep.num_samples) * workers
            whole = math.floor((cluster_cpus - DRIVER_CPUS) / share_of)
            cpus = float(whole) if whole >= 1 else min(CPU_ONLY_SHARE, (cluster_cpus - 0.1) / share_of)
        else:
            cpus = CPU_ONLY_SHARE
    return TrialResources(concurrent, round(cpus, 3), round(gpus, 6))
