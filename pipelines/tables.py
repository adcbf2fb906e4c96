"""What the study, comparison and reproduction commands share: a finished run's results reused when the current code
made them from the same config, and the "mean ± std" cells of their tables. A library: those commands import it."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.sweeper import tracking
from slora.config import RESULTS_VERSION, RunConfig
from slora.configure import ConfigError, from_dict


def finished_results(cfg: RunConfig) -> dict | None:
    """The results.json already in the run's folder, if the current code made it from exactly this config."""
    path = Path(cfg.out_dir) / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    if results.get("results_version") != RESULTS_VERSION:
        return None
    try:  # a key added since the run was made takes its default, which reproduces the old behaviour
        same = from_dict(RunConfig, results.get("config", {})) == cfg
    except ConfigError:
        return None
    return results if same else None


def markdown_cells(group: list[dict], keys: tuple[str, ...]) -> list[str]:
    """Each score over a group's seeds as "mean ± std" in percent."""
    cells = []
    for key in keys:
        mean, spread = tracking.mean_and_spread([100 * g[key] for g in group])
        cells.append(f"{mean:.2f} ± {spread:.2f}")
    return cells
