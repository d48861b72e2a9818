"""``adaptkit port PATH [--write]``: list (and rewrite) mmcv 1.x / mmseg 0.x APIs in foreign code."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from adaptkit.cli._common import print_json, stdout_console

__all__ = ["register", "run", "run_port"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "port",
        help="list the mmcv 1.x / mmseg 0.x APIs in foreign code, with their mmcv 2.x / mmengine replacements",
        description=(
            "Scan a .py file or a folder (recursively) for imports and APIs that mmcv 2.x / mmengine no longer "
            "have, each with its replacement; --write rewrites the imports that have a one-to-one replacement."
        ),
    )
    parser.add_argument("path", metavar="PATH", help="a .py file or a folder of foreign code")
    parser.add_argument(
        "--write",
        action="store_true",
        help="rewrite the imports that have a one-to-one replacement (backups: FILE.py.orig)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_port(args.path, write=args.write, as_json=args.json)


def _port_document(report: Any) -> dict[str, Any]:
    return {
        "path": str(report.path),
        "files": len(report.files),
        "findings": [
            {
                "file": str(f.file),
                "line": f.line,
                "col": f.col,
                "old": f.old,
                "new": f.new,
                "note": f.note,
                "auto_fixable": f.auto_fixable,
            }
            for f in report.findings
        ],
        "rewritten": [{"file": str(r.file), "backup": str(r.backup), "fixed": r.fixed} for r in report.rewritten],
    }


def run_port(path: str, *, write: bool, as_json: bool) -> int:
    from rich.markup import escape
    from rich.table import Table

    from adaptkit.tools.porting import rewrite, scan

    report = rewrite(path) if write else scan(path)
    if as_json:
        print_json(_port_document(report))
        return 0
    console = stdout_console(markup=True)  # its own labels are markup; user text is escaped
    if report.findings:
        table = Table(title=escape(f"mmcv 1.x / mmseg 0.x APIs in {report.path}"), title_justify="left")
        table.add_column("where", no_wrap=True)
        table.add_column("old -> new (why)", overflow="fold")
        table.add_column("fix", no_wrap=True)
        done = "fixed" if write else "auto"
        for f in report.findings:
            where = f.file.relative_to(report.path) if report.path.is_dir() else Path(f.file.name)
            change = f"{escape(f.old)}\n-> {escape(f.new or '(nothing)')}\n[dim]{escape(f.note)}[/dim]"
            table.add_row(escape(f"{where}:{f.line}"), change, done if f.auto_fixable else "by hand")
        console.print(table)
    by_hand = len(report.findings) - report.fixable
    summary = f"{len(report.files)} file(s), {len(report.findings)} finding(s)"
    if write:
        for rewritten in report.rewritten:
            console.print(
                f"rewrote {rewritten.file} ({rewritten.fixed} import(s)); original in {rewritten.backup}", markup=False
            )
        console.print(f"{summary}: {report.fixable} fixed, {by_hand} to port by hand", markup=False)
    elif report.findings:
        hint = "; --write rewrites the auto ones" if report.fixable else ""
        console.print(f"{summary}: {report.fixable} auto, {by_hand} by hand{hint}", markup=False)
    else:
        console.print(f"{summary}: nothing from mmcv 1.x / mmseg 0.x left", markup=False)
    return 0
