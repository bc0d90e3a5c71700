"""``python -m rlur.serving serve|export …``: the serving commands without going through ``rlur``."""

from __future__ import annotations

import sys

from rlur.cli import main


def _main(argv: list[str] | None = None) -> int:
    import rlur.cli

    if "rlur.serving.commands" not in rlur.cli.COMMAND_MODULES:
        rlur.cli.COMMAND_MODULES = (*rlur.cli.COMMAND_MODULES, "rlur.serving.commands")
    return main(argv)


if __name__ == "__main__":
    sys.exit(_main())
