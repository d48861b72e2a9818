"""``adaptkit doctor``: check the installed stack (``--port`` is kept as the older spelling of ``adaptkit port``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from adaptkit.cli._common import print_json, stdout_console

if TYPE_CHECKING:
    from adaptkit.tools.doctor import DoctorReport

__all__ = ["register", "run", "render_report"]

_LABEL = {"ok": "[green] note[/green]", "warn": "[yellow] warn[/yellow]", "error": "[bold red]error[/bold red]"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the installed torch/OpenMMLab stack",
        description=(
            "Report the installed versions and every known-bad combination with its fix "
            "(exit 1 when something is broken). --port is kept as the older spelling of 'adaptkit port'."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--config",
        metavar="CONFIG",
        help="also name the optional packages this config's data pipelines need that are not installed",
    )
    parser.add_argument(
        "--port",
        metavar="FILE_OR_DIR",
        help="same as 'adaptkit port FILE_OR_DIR': scan for mmcv 1.x / mmseg 0.x APIs",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="with --port: rewrite the imports that have a one-to-one replacement (backups: FILE.py.orig)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.write and args.port is None:
        from adaptkit.errors import PortError

        raise PortError("--write rewrites the files given with --port; add --port FILE_OR_DIR")
    if args.port is not None:  # the older spelling of `adaptkit port`
        from adaptkit.cli.port import run_port

        return run_port(args.port, write=args.write, as_json=args.json)
    return _run_doctor(as_json=args.json, config=args.config)


# ----------------------------------------------------------------------------- environment


def _doctor_document(report: DoctorReport) -> dict[str, Any]:
    return {
        "broken": report.broken,
        "cuda": report.cuda,
        "packages": [{"name": p.name, "version": p.version, "note": p.note} for p in report.packages],
        "findings": [
            {"severity": f.severity.value, "code": f.code, "problem": f.problem, "fix": f.fix} for f in report.findings
        ],
    }


def _run_doctor(*, as_json: bool, config: str | None = None) -> int:
    from dataclasses import replace

    from adaptkit.tools.doctor import Finding, Severity, check_environment

    report = check_environment()
    if config is not None:
        from adaptkit.mm.pipelines import pipeline_needs

        extra = tuple(
            Finding(
                severity=Severity.WARN,
                problem=f"{config}: {m.pipeline} uses {m.transform}, which needs {m.package} (not installed)",
                fix=f"pip install {m.package}, or leave {m.transform} out of {m.pipeline}; the model itself does not need it",
                code="pipeline-package",
            )
            for m in pipeline_needs(config)
        )
        report = replace(report, findings=report.findings + extra)
    return render_report(report, as_json=as_json)


def render_report(report: DoctorReport, *, as_json: bool = False) -> int:
    """Print a doctor report (table and findings, or JSON); 1 when it is broken, else 0."""
    from rich.markup import escape
    from rich.table import Table

    from adaptkit.tools.doctor import Severity

    if as_json:
        print_json(_doctor_document(report))
        return 1 if report.broken else 0
    console = stdout_console(markup=True)  # its own labels are markup; user text is escaped
    table = Table(title="adaptkit doctor", title_justify="left")
    table.add_column("package")
    table.add_column("version")
    table.add_column("note")
    for package in report.packages:
        version = escape(package.version) if package.version else "[red]-[/red]"
        table.add_row(package.name, version, escape(package.note))
    table.add_row("cuda", "", escape(report.cuda))
    console.print(table)
    for finding in report.findings:
        console.print(f"{_LABEL[finding.severity.value]} {escape(finding.problem)}")
        console.print(f"       fix: {finding.fix}", markup=False)
    errors = sum(f.severity is Severity.ERROR for f in report.findings)
    warnings = sum(f.severity is Severity.WARN for f in report.findings)
    if errors:
        console.print(f"[bold red]broken:[/bold red] {errors} error(s), {warnings} warning(s); apply the fixes above")
        return 1
    if warnings:
        console.print(f"[yellow]usable, with {warnings} warning(s)[/yellow]")
    else:
        console.print("[green]all good:[/green] this stack runs adaptkit and its mmpose features")
    return 0
