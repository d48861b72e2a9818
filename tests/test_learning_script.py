"""benchmarks/learning.py runs end to end on a tiny budget: the table, the JSON after each variant, the plot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "learning.py"


@pytest.mark.slow
def test_learning_script_trains_scores_and_writes_its_files(tmp_path):
    argv = ["--only", "sctnet-b", "--iters", "2", "--images", "8", "--val-images", "4", "--batch", "2"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *argv, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = tmp_path.glob("learning-*-2iters.json")
    doc = json.loads(path.read_text())
    (row,) = doc["rows"]
    assert doc["iters"] == 2 and doc["budget"] is None
    assert row["variant"] == "sctnet-b" and row["iters"] == 2 and 0.0 <= row["ap"] <= 1.0
    assert row["cpu_s_per_iter"] > 0 and row["cpu_seconds"] > 0 and row["params_m"] > 1
    assert path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "| sctnet-b |" in done.stdout and "2 iterations per variant" in done.stdout


def test_learning_script_refuses_a_negative_iteration_count(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--iters", "-1", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2 and "--iters and --seed not negative" in done.stderr
    assert not (tmp_path / "out").exists()
