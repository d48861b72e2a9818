"""Argument helpers and consoles shared by the subcommands."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from typing import Any

from rich.console import Console

from adaptkit.errors import SourceError

__all__ = ["add_source_arguments", "parse_kwargs", "stdout_console", "print_json"]


def stdout_console(*, markup: bool = False) -> Console:
    """The console commands render to.

    Markup is off unless a command asks for it (and then escapes what it
    prints): sources, paths and output keys are user text, and ``run[v2]``
    or ``[/x]`` must print as written, never as rich markup.
    """
    # piped output (logs, CI, tests) gets a fixed width wide enough for the tables
    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, highlight=False, markup=markup, width=None if tty else 140, soft_wrap=not tty)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")


def add_source_arguments(parser: argparse.ArgumentParser, *, input_default: str | None = "2x3x640x640") -> None:
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="zoo name (sctnet, sctnet-s, sctnet-b), timm:NAME, package.module:callable, path/to/file.py:Name, or a config file",
    )
    parser.add_argument(
        "--arg",
        dest="kwargs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor keyword for SOURCE; VALUE is read as a Python literal (repeatable)",
    )
    if input_default is not None:
        parser.add_argument(
            "--input",
            dest="input_shape",
            default=input_default,
            metavar="BxCxHxW",
            help=f"dummy input shape (default {input_default})",
        )


def parse_kwargs(items: list[str]) -> dict[str, Any]:
    """``["depth=50", "name=foo"]`` -> ``{"depth": 50, "name": "foo"}``."""
    kwargs: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str):  # argparse hands `--arg=--` over as an empty list
            raise SourceError("--arg needs KEY=VALUE with KEY a Python name, e.g. --arg depth=50")
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SourceError(f"--arg {item!r} is not KEY=VALUE with KEY a Python name, e.g. --arg depth=50")
        try:
            kwargs[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            kwargs[key] = raw  # a bare word is a string
        except (TypeError, MemoryError, RecursionError):
            raise SourceError(f"--arg {item!r}: {raw!r} is not a Python literal adaptkit can read") from None
    return kwargs
