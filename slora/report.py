"""The tables printed at the end of a run or a sweep."""

from __future__ import annotations

import math

# (key, title, format); a missing or NaN value prints as '-' (val_ columns when a run has no validation split)
STAGE_COLUMNS = (
    ("stage", "stage", "{:>5.0f}"),
    ("val_accuracy", "val acc", "{:>7.2%}"),
    ("val_average_incremental_accuracy", "val AAA", "{:>7.2%}"),
    ("test_accuracy", "test acc", "{:>8.2%}"),
    ("test_accuracy_old", "old", "{:>6.2%}"),
    ("test_accuracy_new", "new", "{:>6.2%}"),
    ("test_forgetting", "forget", "{:>6.2%}"),
    ("test_average_incremental_accuracy", "test AAA", "{:>8.2%}"),
    ("lora_rank", "rank", "{:>4.0f}"),
    ("stored_parameters", "adapter params", "{:>14,.0f}"),
    ("stage_seconds", "seconds", "{:>7.1f}"),
)


def stage_table(results: list[dict]) -> str:
    return format_table(results, STAGE_COLUMNS)


def format_table(rows: list[dict], columns: tuple[tuple[str, str, str], ...]) -> str:
    widths = [max(len(title), len(fmt.format(0))) for _, title, fmt in columns]
    header = "  ".join(f"{title:>{width}}" for (_, title, _), width in zip(columns, widths))
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = []
        for (key, _, fmt), width in zip(columns, widths):
            value = row.get(key, math.nan)
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            cells.append(f"{'-' if missing else fmt.format(value):>{width}}")
        lines.append("  ".join(cells))
    return "\n".join(lines)
