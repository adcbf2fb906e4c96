"""The stage-boundary checkpoint: every adapter tensor and the ContinualState of one or more runs of a config (a
trial's seeds) in one safetensors file, so a run resumes after its last finished stage with the same numbers."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .checks import ConfigError
from .configure import to_dict
from .continual import ContinualRun, ContinualState

CHECKPOINT_FILE = "checkpoint.safetensors"
# Keys that may differ between a run and its resumption: where it writes and how it shows progress, not what it
# computes.
RESUMABLE_CHANGES = ("resume", "out_dir", "progress", "device", "save_merged")


def save_checkpoint(runs: list[ContinualRun], path: str | Path) -> None:
    state = {f"seed{s}/{k}": v for s, run in enumerate(runs) for k, v in run.learner.learner_state().items()}
    meta = {"continual": [asdict(run.state) for run in runs], "config": _computed(runs[0].cfg)}
    save_file(state, str(path), metadata={"slora": json.dumps(meta)})


def load_checkpoint(runs: list[ContinualRun], path: str | Path) -> None:
    """Restore each run from its part of the file; a checkpoint of another config is refused."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("slora", "{}"))
    saved = meta.get("config")
    if saved is not None and saved != _computed(runs[0].cfg):
        changed = sorted(k for k in set(saved) | set(_computed(runs[0].cfg))
                         if saved.get(k) != _computed(runs[0].cfg).get(k))
        raise ConfigError(f"{path}: written by a run with other settings ({', '.join(changed)}); resume with the "
                          f"same config or start a new out_dir")
    state = load_file(str(path))
    for s, run in enumerate(runs):
        prefix = f"seed{s}/"
        run.restore({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                    ContinualState(**meta["continual"][s]))


def _computed(cfg) -> dict:
    return {k: v for k, v in to_dict(cfg).items() if k not in RESUMABLE_CHANGES}
