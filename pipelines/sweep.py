"""A sweep: ``python pipelines/sweep.py variant=slora_pp [key=value ...]``.

--help lists every key with its default; --cfg job prints the run config every trial starts from (before its
sampled values)."""

from __future__ import annotations

import sys

from pipelines.sweeper.options import parse_sweep_args, sweep_help
from pipelines.sweeper.tuner import run_sweep
from slora.configure import ConfigError, compose_yaml, wants_config, wants_help


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(__doc__.strip() + "\n\n" + sweep_help())
        return 0
    try:
        show, argv = wants_config(argv)
        sweep, run_overrides, space_overrides = parse_sweep_args(argv)
        if show:
            print(compose_yaml(run_overrides), end="")
            return 0
        run_sweep(sweep, run_overrides, space_overrides)
    except (ConfigError, ConnectionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def cli() -> None:
    """The `slora-sweep` console script (pyproject.toml [project.scripts])."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
