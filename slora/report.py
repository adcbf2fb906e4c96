"""The per-stage table printed at the end of a run."""

from __future__ import annotations

import math

COLUMNS = (
    ("stage", "stage", "{:>5.0f}"),
    ("accuracy", "acc", "{:>6.2%}"),
    ("accuracy_old", "old", "{:>6.2%}"),
    ("accuracy_new", "new", "{:>6.2%}"),
    ("forgetting", "forget", "{:>6.2%}"),
    ("average_incremental_accuracy", "AAA", "{:>6.2%}"),
    ("rank", "rank", "{:>4.0f}"),
    ("stored_parameters", "adapter params", "{:>14,.0f}"),
    ("stage_seconds", "seconds", "{:>7.1f}"),
)


def stage_table(results: list[dict]) -> str:
    header = "  ".join(f"{title:>{len(fmt.format(0))}}" for _, title, fmt in COLUMNS)
    lines = [header, "-" * len(header)]
    for row in results:
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key, math.nan)
            width = len(fmt.format(0))
            cells.append(f"{'-':>{width}}" if isinstance(value, float) and math.isnan(value) else fmt.format(value))
        lines.append("  ".join(cells))
    return "\n".join(lines)
