"""One continual run: ``python pipelines/run.py variant=slora_pp benchmark=digits [key=value ...]``."""

from __future__ import annotations

import sys

from slora.overrides import ConfigError, build_config
from slora.runner import run_continual


def main(argv: list[str]) -> int:
    try:
        cfg = build_config(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_continual(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
