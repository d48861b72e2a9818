"""Hostile numbers at the boundary: input shapes and target specs fail once, typed, in one line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import adaptkit
from adaptkit.core.shapes import MAX_DIM, parse_input_shape
from adaptkit.errors import InputShapeError, TargetError


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(
    "shape",
    [
        (1, 3, 32.7, 32),
        (1, 3, 32.0, 32),
        (1, 3, True, 32),
        (1, 3, "32", 32),
        (1, 3, None, 32),
        (1, 3, 64, 2**63),
        (1, 3, 64, 10**5000),
        (1, 3, MAX_DIM + 1, 1),
        (2**20, 2**20, 2**20, 2**20),
        "1x3x64x9223372036854775808",
        "1x3x64x" + "9" * 5000,
        "1x3x64.0x64",
        "1x3x1_0x64",
        "1x3x\u0661\u0662x64",  # Arabic-Indic digits are not what a shape is written in
        "1x3x-4x64",
        b"1x3x64x64",
        64,
    ],
)
def test_malformed_shapes_are_one_typed_line(shape):
    with pytest.raises(InputShapeError) as info:
        parse_input_shape(shape)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_integer_like_dimensions_pass():
    assert parse_input_shape((np.int64(1), 3, torch.tensor(64), 48)) == (1, 3, 64, 48)
    assert parse_input_shape(" 2 x 3 x 64 x 48 ") == (2, 3, 64, 48)


def test_probe_refuses_a_float_size_instead_of_truncating():
    with pytest.raises(InputShapeError, match="must be an integer"):
        adaptkit.probe(Tiny(), (1, 3, 32.7, 32))
    with pytest.raises(InputShapeError, match="must be an integer"):
        adaptkit.probe(Tiny(), (1, 3, True, 32))


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("32@1" + "0" * 400, "out of range"),
        ("9" * 5000 + "@4", "too many"),
        ("99999999999999999999999@4", "too many"),
        ("32@0.0000001", "out of range"),
        ("32@4x0.001", "out of range"),
        ("32@100000", "out of range"),
        ({"channels": 32, "stride": float("inf")}, "out of range"),
        ({"channels": 32, "stride": float("nan")}, "out of range"),
        ({"channels": 32, "stride": (4, float("-inf"))}, "out of range"),
        ({"channels": 32, "stride": 10**400}, "not a number adaptkit can use"),
        ({"channels": 10**5000, "stride": 4}, "too many"),
        ({"channels": 32.0, "stride": 4}, "positive integer"),
        ({"channels": 32, "stride": True}, "must be a number"),
    ],
)
def test_hostile_target_numbers_are_one_typed_line(target, words):
    with pytest.raises(TargetError, match=words) as info:
        adaptkit.parse_target(target)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


@pytest.mark.parametrize("target", ["99999999999999999999999@4", {"channels": 32, "stride": float("inf")}])
def test_wrap_refuses_hostile_targets_before_building(target):
    with pytest.raises(TargetError):
        adaptkit.wrap(Tiny(), target, (1, 3, 32, 32))


def test_a_fine_stride_still_reads():
    spec = adaptkit.parse_target("32@0.5")
    assert spec.stride == (0.5, 0.5)
    assert math.isclose(adaptkit.parse_target({"channels": 32, "stride": 1 / 64}).stride[0], 1 / 64)


@pytest.mark.parametrize(
    "argv",
    [
        ("plan", "sctnet-s", "--input", "1x3x64x9223372036854775808", "--target", "32@4"),
        ("plan", "sctnet-s", "--input", "1x3x64x64", "--target", "32@1" + "0" * 400),
        ("plan", "sctnet-s", "--input", "1x3x64x64", "--target", "9" * 5000 + "@4"),
        ("plan", "sctnet-s", "--input", "1x3x64x64", "--target", "32@0.0000001"),
        ("probe", "sctnet-s", "--input", "1x3x64x" + "9" * 5000),
    ],
)
def test_cli_hostile_numbers_exit_2_in_one_line(run_cli, argv):
    code, out, err = run_cli(*argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
