"""The ``adaptkit`` command: parse, call the public API with keywords, render.

Each subcommand lives in ``adaptkit/cli/<name>.py`` with a
``register(subparsers)`` that adds its parser and sets ``run``. Any
``AdaptkitError`` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from adaptkit.errors import AdaptkitError, Terminated

__all__ = ["main", "build_parser"]

_COMMANDS = ("probe", "plan", "wrap", "smoke", "bench", "doctor", "port")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {_printable(message)} (see '{self.prog} --help')\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> object:
        # `--opt=--`: the value is the string "--"; argparse would drop it and hand over an empty list
        if action.nargs is None and action.option_strings and arg_strings == ["--"]:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


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


def _printable(text: str) -> str:
    """Undecodable bytes of file names (surrogates) and control characters escaped.

    Printing never fails, and user text cannot break the one error line
    (``\x1e`` or ``\u2028`` are line breaks to many readers).
    """
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


def _fail(command: str, message: str, code: int) -> int:
    line = _printable(" ".join(message.split()))  # whitespace runs (newlines too) become one space
    try:
        print(f"adaptkit {command}: {line}", file=sys.stderr)
    except (OSError, ValueError):  # stderr closed: the exit code still tells
        pass
    return code


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    from adaptkit.errors import UnusedBackboneWarning

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UnusedBackboneWarning)  # plan and wrap print their own line
            return int(args.run(args) or 0)
    except AdaptkitError as exc:
        return _fail(args.command, f"error: {str(exc) or type(exc).__name__}", 2)
    except SystemExit as exc:  # only user code exits from inside a command (argparse is done)
        return _fail(args.command, f"error: user code called sys.exit({exc.code!r}); it must not exit", 2)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", 130)
    except Terminated as exc:
        return _fail(args.command, "terminated", 128 + exc.signum)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
