"""A sweep: ``python pipelines/sweep.py variant=slora_pp [key=value ...]`` (see README for the keys)."""

from __future__ import annotations

import sys

from pipelines.sweeping import parse_sweep_args, run_sweep
from slora.overrides import ConfigError


def main(argv: list[str]) -> int:
    try:
        sweep, run_overrides, space_overrides = parse_sweep_args(argv)
        run_sweep(sweep, run_overrides, space_overrides)
    except (ConfigError, ConnectionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
