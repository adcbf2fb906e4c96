"""One sweep as its steps see it: its settings, name, paths, search space and base config, and where it logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from slora.config import RunConfig

from .options import SweepConfig
from .tracking import TrackingTarget


@dataclass
class SweepRun:
    sweep: SweepConfig
    name: str
    base: RunConfig  # the config every trial starts from, before its sampled values
    params: list  # the search space (search_spaces.Param)
    num_stages: int
    run_overrides: dict  # run keys for every trial, local paths made absolute
    storage: str  # Ray's storage_path (a local folder or s3://...)
    out_dir: Path
    inputs: dict  # what it searches over which base (tuner.sweep_inputs): recorded in sweep.json
    previous: dict = field(default_factory=dict)  # the sweep.json of the sweep this call resumes, if any
    target: TrackingTarget | None = None  # set once its MLflow parent run exists

    @property
    def uri(self) -> str:
        return self.target.tracking_uri

    @property
    def searched(self) -> list[str]:
        return [p.key for p in self.params if p.kind != "value"]
