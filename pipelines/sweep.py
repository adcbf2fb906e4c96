"""A sweep: ``python pipelines/sweep.py variant=slora_pp [key=value ...]``.

--help lists every key with its default."""

from __future__ import annotations

import sys

from pipelines.sweeper.options import parse_sweep_args, sweep_help
from pipelines.sweeper.tuner import run_sweep
from slora.configure import ConfigError, wants_help


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(__doc__.strip() + "\n\n" + sweep_help())
        return 0
    try:
        sweep, run_overrides, space_overrides = parse_sweep_args(argv)
        run_sweep(sweep, run_overrides, space_overrides)
    except (ConfigError, ConnectionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
