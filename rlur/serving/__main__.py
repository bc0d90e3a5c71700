"""``python -m rlur.serving serve|export …``: the serving commands, also before ``rlur.cli`` lists them."""

from __future__ import annotations

import sys

import rlur.cli

__all__: list[str] = []


def _main(argv: list[str] | None = None) -> int:
    modules = rlur.cli.COMMAND_MODULES
    if "rlur.serving.commands" not in modules:
        rlur.cli.COMMAND_MODULES = (*modules, "rlur.serving.commands")
    try:
        return rlur.cli.main(argv)
    finally:
        rlur.cli.COMMAND_MODULES = modules


if __name__ == "__main__":
    sys.exit(_main())
