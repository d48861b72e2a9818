"""The ``adaptkit`` command: parse, call the public API with keywords, render.

Each subcommand lives in ``adaptkit/cli/<name>.py`` with a
``register(subparsers)`` that adds its parser and sets ``run``. Any
``AdaptkitError`` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from adaptkit.errors import AdaptkitError

__all__ = ["main", "build_parser"]

_COMMANDS = ("probe", "plan", "wrap", "smoke", "bench", "doctor")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from adaptkit import __version__

    parser = OneLineParser(prog="adaptkit", description="Drop any backbone into an mmpose model.")
    parser.add_argument("--version", action="version", version=f"adaptkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    subparsers.required = True
    for name in _COMMANDS:
        importlib.import_module(f"adaptkit.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except AdaptkitError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"adaptkit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adaptkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
