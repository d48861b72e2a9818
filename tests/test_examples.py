"""Every example runs, as a user would run it, and says what it promises."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT


def run_example(*argv: str) -> str:
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_demo_sctnet_into_hrnet(tmp_path):
    out = run_example("examples/sctnet_into_hrnet.py", "--work-dir", str(tmp_path / "demo"))
    assert "input passthrough" in out and "same tensor as 0" in out  # probe
    assert "project" in out and "resize" in out  # plan
    assert "heatmaps for a 2x3x256x192 batch: [2, 17, 64, 48]" in out  # build
    assert "coco/AP = " in out and "held-out images" in out  # smoke: trained, then scored
    assert (tmp_path / "demo" / "train" / "weights.pth").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet50", "convnext"])
def test_torchvision_backbones(model, tmp_path):
    out = run_example("examples/torchvision_backbone.py", "--model", model, "--work-dir", str(tmp_path))
    assert "chose 'c2', 'c3', 'c4', 'c5'" in out  # c2 alone leaves most of the weights untrained: all scales merge
    assert "backbone used: 100.0%" in out
    assert "heatmaps: [1, 17, 64, 48]" in out


def test_token_backbone():
    out = run_example("examples/vit_tokens.py")
    assert "layout NLC, 1 prefix token, stride (16, 16), grid (16, 12)" in out
    assert "heatmaps: [1, 17, 64, 48]" in out


def test_own_backbone_file():
    out = run_example("examples/own_backbone.py")
    assert "stride 32 matches the target's exactly" in out
    assert "trained one epoch" in out
