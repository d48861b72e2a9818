"""Shared constants and fixtures: the two stock configs and the shipped fragments."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HRNET = "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"
CROWDPOSE = "mmpose::body_2d_keypoint/topdown_heatmap/crowdpose/td-hm_res50_8xb64-210e_crowdpose-256x192.py"
ADAPTERS = ROOT / "adapters"


def shipped_fragment(backbone: str, config: str) -> Path:
    name = "hrnet-w32_coco-256x192" if config == HRNET else "res50_crowdpose-256x192"
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
