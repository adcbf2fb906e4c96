"""One continual run: ``python pipelines/run.py variant=slora_pp benchmark=digits [key=value ...]``.

--help lists every key with its default."""

from __future__ import annotations

import sys

from slora.overrides import ConfigError, build_config, run_keys_help, wants_help
from slora.runner import run_continual


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(__doc__.strip() + "\n\n" + run_keys_help())
        return 0
    try:
        run_continual(build_config(argv))  # data and backbone errors are ConfigErrors too, raised before training
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
