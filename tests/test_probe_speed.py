"""The probe's shape-only answers on the meta device agree with what torch computes on real tensors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import adaptkit
from adaptkit.core.shape_only import ShapeOnly as _ShapeOnlyNorms
from adaptkit.core.shape_only import _meta_conv2d, _meta_interpolate


def meta(t: torch.Tensor) -> torch.Tensor:
    return t.to("meta")


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((2, 3, 17, 9), dict(size=(5, 40), mode="bilinear")),
        ((2, 3, 17, 9), dict(size=7, mode="nearest")),
        ((2, 3, 17, 9), dict(scale_factor=2, mode="nearest")),
        ((2, 3, 17, 9), dict(scale_factor=(0.5, 3.3), mode="bilinear", align_corners=False)),
        ((2, 3, 17, 9), dict(scale_factor=1.7, mode="bicubic", align_corners=True)),
        ((1, 4, 33), dict(scale_factor=0.37, mode="linear")),
        ((1, 2, 5, 6, 7), dict(scale_factor=1.5, mode="trilinear")),
        ((2, 3, 17, 9), dict(scale_factor=1.25, mode="nearest-exact")),
    ],
)
def test_interpolate_answers_torchs_shape(shape, kwargs):
    x = torch.randn(shape)
    answer = _meta_interpolate(meta(x), **kwargs)
    assert answer is not None and answer.is_meta
    assert answer.shape == F.interpolate(x, **kwargs).shape


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(size=(4, 4), scale_factor=2.0),  # both: torch's ValueError
        dict(),  # neither
        dict(scale_factor=2.0, mode="area"),
        dict(scale_factor=2.0, mode="nearest", align_corners=True),
        dict(scale_factor=2.0, mode="bilinear", antialias=True),
        dict(scale_factor=2.0, mode="linear"),  # 4-D input, 1-D mode
        dict(size=(4, 4, 4), mode="nearest"),
    ],
)
def test_interpolate_leaves_unusual_calls_to_torch(kwargs):
    assert _meta_interpolate(torch.empty(1, 2, 8, 8, device="meta"), **kwargs) is None


def test_conv2d_answers_torchs_shape_over_many_settings():
    for k, s, p, d, g in itertools.product((1, 3, (3, 1)), (1, 2, (2, 1)), (0, 1, (2, 0)), (1, 2), (1, 2)):
        x = torch.randn(1, 4, 13, 10)
        kh, kw = (k, k) if isinstance(k, int) else k
        w = torch.randn(6, 4 // g, kh, kw)
        b = torch.randn(6)
        answer = _meta_conv2d(meta(x), meta(w), meta(b), s, p, d, g)
        assert answer is not None
        assert answer.shape == F.conv2d(x, w, b, s, p, d, g).shape, (k, s, p, d, g)


def test_conv2d_leaves_mismatches_and_string_padding_to_torch():
    x, w = torch.empty(1, 4, 8, 8, device="meta"), torch.empty(6, 3, 3, 3, device="meta")
    assert _meta_conv2d(x, w) is None  # channel mismatch: torch's own error
    assert _meta_conv2d(x, torch.empty(6, 4, 3, 3, device="meta"), None, 1, "same") is None
    assert _meta_conv2d(x, torch.empty(6, 4, 9, 9, device="meta")) is None  # kernel larger than the input
    with _ShapeOnlyNorms(), pytest.raises(RuntimeError):
        F.conv2d(x, w)


def test_activations_and_sums_keep_shape_dtype_and_in_place_identity():
    x = torch.empty(2, 8, 5, 5, device="meta")
    with _ShapeOnlyNorms():
        assert F.relu(x, inplace=True) is x
        assert F.relu(x, True) is x
        y = F.relu(x)
        assert y is not x and y.shape == x.shape
        assert F.gelu(x, approximate="tanh").shape == x.shape
        assert nn.ReLU6(inplace=True)(x) is x  # F.hardtanh(x, 0.0, 6.0, True): MobileNetV2's activation
        assert nn.LeakyReLU(0.1)(x).shape == x.shape and nn.ELU(inplace=True)(x) is x
        z = x + torch.empty(8, 1, 1, device="meta")
        assert z.shape == x.shape
        assert (x.half() * 2.0).dtype == torch.float16
        assert (x + torch.empty(1, 8, 1, 1, device="meta", dtype=torch.float64)).dtype == torch.float64
        x += torch.empty(1, 8, 1, 1, device="meta")
        with pytest.raises(RuntimeError):
            x + torch.empty(3, 1, 1, device="meta")  # no broadcast: an error, as torch gives
        with pytest.raises(RuntimeError):
            x.add_(torch.empty(2, 8, 5, 5, 2, device="meta"))  # would grow x


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2.0, mode="bilinear")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = F.relu(self.conv(x), inplace=True)
        return a, self.up(a) + F.interpolate(a, size=(2 * a.shape[2], 2 * a.shape[3]))


def test_probe_on_meta_matches_a_real_forward():
    model = Tiny().eval()
    result = adaptkit.probe(model, (2, 3, 64, 48), mode="meta")
    real = adaptkit.probe(model, (2, 3, 64, 48), mode="real")
    assert [f.shape for f in result.features] == [f.shape for f in real.features] == [(2, 8, 32, 24), (2, 8, 64, 48)]
    assert [f.stride for f in result.features] == [(2, 2), (1, 1)]


def test_broadcast_follows_torch():
    from adaptkit.core.shape_only import _broadcast

    for a, b in [((2, 3, 4), (3, 1)), ((1,), (5, 1, 7)), ((), (2, 2)), ((4, 1), (1, 6)), ((0, 3), (1, 3))]:
        assert _broadcast(a, b) == tuple(torch.broadcast_shapes(a, b))
    with pytest.raises(RuntimeError, match="must match"):
        _broadcast((2, 3), (4, 3))


@pytest.mark.slow
def test_probe_speed_script_times_probe_and_torchinfo_side_by_side(tmp_path):
    import json
    import subprocess
    import sys

    from .conftest import ROOT

    script = ROOT / "benchmarks" / "probe_speed.py"
    argv = [
        "--backbone",
        "sctnet-b",
        "--shape",
        "1x3x64x64",
        "--no-forward",
        "--budget",
        "0.05",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    (path,) = tmp_path.glob("probe_speed-cpu-*.json")
    (row,) = json.loads(path.read_text())["rows"]
    assert row["backbone"] == "SCTNet-B" and row["input"] == "1x3x64x64" and row["probe_mode"] == "meta"
    assert row["samples"]["probe"] >= 4 and row["samples"]["torchinfo"] >= 4
    assert row["speedup_low"] <= row["speedup_vs_torchinfo"] <= row["speedup_high"]
    assert row["forward_s"] is None


@pytest.mark.slow
def test_probe_speed_script_times_a_timm_model_on_both_paths_beside_a_forward(tmp_path):
    import json
    import subprocess
    import sys

    from .conftest import ROOT

    pytest.importorskip("timm", reason="timm is an optional dependency")
    script = ROOT / "benchmarks" / "probe_speed.py"
    argv = ["--timm", "resnet18", "--shape", "1x3x64x64", "--budget", "0.05", "--out", str(tmp_path)]
    done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    (path,) = tmp_path.glob("probe_speed-cpu-*.json")
    (row,) = json.loads(path.read_text())["rows"]  # --timm alone: only the timm model
    assert row["backbone"] == "resnet18" and row["probe_mode"] == "meta"
    assert row["probe_real_s"] > 0 and row["forward_s"] > 0 and row["probe_s"] > 0
    bad = subprocess.run(
        [sys.executable, str(script), "--timm", "resnet1888", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "resnet18" in bad.stderr
    assert not (tmp_path / "x").exists()
