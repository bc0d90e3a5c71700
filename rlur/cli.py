"""The ``rlur`` command line. Each sub-command lives next to the code it drives and registers here.

Errors a user can cause (bad names, negative counts, unwritable paths) end in a one-line
``rlur: error: …`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

__all__ = ["CliError", "check_writable", "main", "non_negative_int", "positive_float", "positive_int"]

#: Modules that each define ``register(subparsers)``; their order is the order in ``rlur --help``.
COMMAND_MODULES = (
    "rlur.sim.commands",
    "rlur.training.commands",
    "rlur.evaluation.commands",
    "rlur.abtest.commands",
    "rlur.serving.commands",
    "rlur.data.commands",
    "rlur.live.commands",
)


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


#: RLUR's ``--no-X`` switches (``rlur train``, ``rlur live``) → ``RLURConfig`` fields.
ABLATIONS = {"normalise": "normalise", "rnd": "rnd", "groups": "groups", "soft-reg": "soft_reg",
             "immediate": "immediate"}


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _number(text: str, ok, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):  # NaN fails every bound
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    return _number(text, lambda v: v > 0, "a positive number")


def non_negative_float(text: str) -> float:
    """argparse type: a number ≥ 0."""
    return _number(text, lambda v: v >= 0, "a non-negative number")


def check_writable(path: str | Path, directory: bool = False) -> Path:
    """Fail early (before any long work) when ``path`` cannot be written."""
    p = Path(path)
    if directory and p.exists() and not p.is_dir():
        raise CliError(f"{p} exists and is not a directory")
    if not directory and p.is_dir():
        raise CliError(f"{p} is a directory; expected a file path")
    target_dir = p if directory else p.parent
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        probe = target_dir / f".rlur-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise CliError(f"cannot write to {target_dir}: {err.strerror or err}") from None
    return p


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``rlur …: error: …``) instead of usage dumps."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rlur",
        description="RLUR: reinforcing user retention in short-video recommendation (Cai et al., WWW 2023).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        if os.environ.get("RLUR_DEBUG"):
            raise
        print(f"rlur: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `rlur … | head`
        return 0
    except KeyboardInterrupt:
        print("rlur: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run through the imported module so that exception classes match those the commands raise.
    from rlur.cli import main as _main

    sys.exit(_main())
