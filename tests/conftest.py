"""Shared constants and fixtures: the two stock configs and the shipped fragments."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from adaptkit.mm.stock import CROWDPOSE, FRAGMENT_NAMES, HRNET  # noqa: F401  (the tests import the stock names from here)

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ROOT / "adapters"


def shipped_fragment(backbone: str, config: str) -> Path:
    name = next(part for part, stock in FRAGMENT_NAMES.items() if stock == config)
    return ADAPTERS / f"{backbone}_{name}.py"


@pytest.fixture
def run_cli(capsys):
    """Run the real entry point in-process; return (exit code, stdout, stderr)."""
    from adaptkit.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def cli_subprocess():
    """Run ``python -m adaptkit`` in a fresh process, as a user's shell would."""
    import subprocess

    def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "adaptkit", *argv], capture_output=True, text=True, cwd=cwd, timeout=600
        )

    return run


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--overwrite-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.txt from the current CLI output (review the diff after)",
    )
