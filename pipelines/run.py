"""One continual run: ``python pipelines/run.py variant=slora_pp benchmark=digits [key=value ...]``.

--help lists every key with its default; --cfg job prints the composed config; resume=true out_dir=DIR continues
an interrupted run from its last finished stage."""

from __future__ import annotations

import sys

from slora.configure import ConfigError, compose_run, compose_yaml, run_keys_help, wants_config, wants_help
from slora.runner import run_continual


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(__doc__.strip() + "\n\n" + run_keys_help())
        return 0
    try:
        show, argv = wants_config(argv)
        if show:
            print(compose_yaml(argv), end="")
            return 0
        run_continual(compose_run(argv))  # data and backbone errors are ConfigErrors too, raised before training
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def cli() -> None:
    """The `slora-run` console script (pyproject.toml [project.scripts])."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
