"""Targets: spec strings, dicts, mmpose configs (stock and hand-written) and heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from adaptkit import ConfigError, Layout, TargetError, TargetSpec
from adaptkit.api import parse_target
from adaptkit.core.targets import target_from_spec
from adaptkit.mm.targets import target_from_config, target_from_head

HRNET = "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"
CROWD = "mmpose::body_2d_keypoint/topdown_heatmap/crowdpose/td-hm_res50_8xb64-210e_crowdpose-256x192.py"

CODEC = "codec = dict(type='MSRAHeatmap', input_size=(192, 256), heatmap_size=(48, 64), sigma=2)\n"


def write_config(tmp_path: Path, text: str, name: str = "cfg.py") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def resnet18_config(head: str, codec: str = CODEC) -> str:
    """A small top-down config: ResNet-18 (512 channels at stride 32) and the given head."""
    return codec + (
        "model = dict(\n"
        "    type='TopdownPoseEstimator',\n"
        "    backbone=dict(type='ResNet', depth=18),\n"
        f"    head={head},\n"
        ")\n"
    )


# ---------------------------------------------------------------------------- spec strings


@pytest.mark.parametrize(
    ("text", "channels", "stride"),
    [
        ("32@4", 32, (4, 4)),
        ("32@4x8", 32, (4, 8)),
        ("32@4,8", 32, (4, 8)),
        (" 64 @ 8 ", 64, (8, 8)),
        ("17 @ 4 x 2", 17, (4, 2)),
        ("2048@32", 2048, (32, 32)),
        ("16@2.5", 16, (2.5, 2.5)),
    ],
)
def test_spec_strings(text: str, channels: int, stride: tuple[float, float]) -> None:
    spec = parse_target(text)
    assert spec == target_from_spec(text.strip())
    assert spec.channels == channels and spec.stride == stride
    assert spec.layout is Layout.NCHW and spec.num_inputs == 1 and spec.read_index == -1
    assert spec.source == text.strip() and spec.config is None


def test_whole_strides_are_ints() -> None:
    spec = parse_target("32@4.0x8")
    assert spec.stride == (4, 8)
    assert all(type(s) is int for s in spec.stride)


@pytest.mark.parametrize(
    "text", ["", "abc", "32", "@4", "32@", "32@four", "-32@4", "32@-4", "32@4x", "32@4x8x16", "32@@4"]
)
def test_garbage_strings(text: str) -> None:
    with pytest.raises(TargetError, match="cannot read target .*; write CHANNELS@STRIDE"):
        parse_target(text)


def test_target_from_spec_rejects_garbage() -> None:
    with pytest.raises(TargetError, match=r"target spec '32 at 4' is not CHANNELS@STRIDE, e\.g\. 32@4"):
        target_from_spec("32 at 4")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0@4", "target spec '0@4': target channels must be a positive integer, got 0"),
        ("32@0", r"target spec '32@0': target stride must be two positive numbers \(height, width\), got \(0, 0\)"),
        ("32@4x0", "target stride must be two positive numbers"),
    ],
)
def test_zero_channels_or_stride(text: str, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        parse_target(text)


def test_a_target_spec_passes_through() -> None:
    spec = TargetSpec(channels=48, stride=(8, 8), head_type="X")
    assert parse_target(spec) is spec


def test_a_target_of_another_type() -> None:
    with pytest.raises(TargetError, match="a target is a TargetSpec, .*; got int"):
        parse_target(42)


# ---------------------------------------------------------------------------- dicts


@pytest.mark.parametrize(
    ("data", "stride", "layout"),
    [
        ({"channels": 32, "stride": 4}, (4, 4), Layout.NCHW),
        ({"channels": 32, "stride": 4.0}, (4, 4), Layout.NCHW),
        ({"channels": 32, "stride": [4, 8]}, (4, 8), Layout.NCHW),
        ({"channels": 32, "stride": (4.0, 2.5)}, (4, 2.5), Layout.NCHW),
        ({"channels": 32, "stride": 8, "layout": "nhwc"}, (8, 8), Layout.NHWC),
        ({"channels": 32, "stride": 8, "layout": "NLC"}, (8, 8), Layout.NLC),
    ],
)
def test_dicts(data: dict, stride: tuple[float, float], layout: Layout) -> None:
    spec = parse_target(data)
    assert spec.channels == 32 and spec.stride == stride and spec.layout is layout
    assert all(type(s) is int for s in spec.stride if float(s).is_integer())


def test_dict_with_codec_sizes_gives_tuples() -> None:
    spec = parse_target({"channels": 17, "stride": 4, "heatmap_size": [48, 64], "input_size": [192, 256]})
    assert spec.heatmap_size == (48, 64) and spec.input_size == (192, 256)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"channels": 32, "stride": 4, "colour": "red"}, r"unknown target field\(s\) colour; known fields: .*channels"),
        ({"channels": 32, "strides": 4}, r"unknown target field\(s\) strides"),
        ({"stride": 4}, "cannot read target"),
        ({"channels": 32}, "cannot read target"),
        ({"channels": 0, "stride": 4}, "target channels must be a positive integer"),
        ({"channels": 32, "stride": [4, 0]}, "target stride must be two positive numbers"),
        ({"channels": 32, "stride": "four"}, "cannot read target"),
        ({"channels": 32, "stride": 4, "layout": "CHW"}, "unknown layout 'CHW'"),
        ({"channels": 32, "stride": 4, "num_inputs": 0}, "at least one map"),
    ],
)
def test_bad_dicts(data: dict, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        parse_target(data)


@pytest.mark.parametrize("stride", [[4], [4, 4, 4], "48"])
def test_dict_stride_of_the_wrong_length(stride) -> None:
    with pytest.raises(TargetError, match="stride"):
        parse_target({"channels": 32, "stride": stride})


@pytest.mark.parametrize("channels", [32.5, True])
def test_dict_channels_must_be_a_whole_number(channels) -> None:
    with pytest.raises(TargetError, match="channels"):
        parse_target({"channels": channels, "stride": 4})


# ---------------------------------------------------------------------------- bad configs


def test_non_existent_config_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.py")
    with pytest.raises((TargetError, ConfigError), match="missing.py' does not exist"):
        parse_target(missing)


def test_non_existent_package_config() -> None:
    with pytest.raises((TargetError, ConfigError), match="is not in the installed mmpose"):
        parse_target("mmpose::body_2d_keypoint/no_such_config.py")


def test_unknown_config_scope() -> None:
    with pytest.raises((TargetError, ConfigError), match="unknown config scope 'mmfoo'"):
        parse_target("mmfoo::x/y.py")


def test_config_with_a_syntax_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "model = dict(type='TopdownPoseEstimator',\n    backbone=dict(type='ResNet'\n")
    with pytest.raises((TargetError, ConfigError), match="cannot read config .*cfg.py"):
        target_from_config(path)


def test_config_without_a_head(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, CODEC + "model = dict(type='TopdownPoseEstimator', backbone=dict(type='ResNet', depth=18))\n"
    )
    with pytest.raises(TargetError, match="has no model.backbone and model.head; give a top-down estimator config"):
        parse_target(path)


def test_config_without_a_model(tmp_path: Path) -> None:
    path = write_config(tmp_path, "lr = 0.1\n")
    with pytest.raises(TargetError, match="has no model.backbone and model.head"):
        target_from_config(path)


def test_config_without_a_codec(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, resnet18_config("dict(type='HeatmapHead', in_channels=512, out_channels=17)", codec="")
    )
    with pytest.raises(TargetError, match="names no codec input_size; pass the target as CHANNELS@STRIDE"):
        target_from_config(path)


def test_config_whose_head_does_not_fit_its_backbone(tmp_path: Path) -> None:
    path = write_config(tmp_path, resnet18_config("dict(type='HeatmapHead', in_channels=256, out_channels=17)"))
    with pytest.raises(TargetError, match="inconsistent: its head expects 256 channels but its backbone gives 512"):
        target_from_config(path)


def test_config_whose_head_does_not_give_the_codec_size(tmp_path: Path) -> None:
    head = "dict(type='HeatmapHead', in_channels=512, out_channels=17, deconv_out_channels=None)"
    path = write_config(tmp_path, resnet18_config(head))
    with pytest.raises(TargetError, match="its head produces 6x8 heatmaps but the codec wants 48x64"):
        target_from_config(path)


def test_hand_written_config(tmp_path: Path) -> None:
    head = "dict(type='HeatmapHead', in_channels=512, out_channels=5, decoder=codec)"
    path = write_config(tmp_path, resnet18_config(head), name="small_resnet.py")
    spec = parse_target(path)
    assert spec.channels == 512 and spec.stride == (32, 32)
    assert spec.head_upsample == 8 and spec.num_keypoints == 5
    assert spec.heatmap_size == (48, 64) and spec.input_size == (192, 256)
    assert spec.head_type == "HeatmapHead" and spec.source == path
    assert spec.config == str(Path(path).resolve())  # not a package config: an absolute path


# ---------------------------------------------------------------------------- stock configs


def test_hrnet_config() -> None:
    spec = target_from_config(HRNET)
    assert spec.channels == 32 and spec.stride == (4, 4)
    assert spec.heatmap_size == (48, 64) and spec.input_size == (192, 256)
    assert spec.num_keypoints == 17 and spec.head_upsample == 1
    assert spec.head_type == "HeatmapHead" and spec.layout is Layout.NCHW
    assert spec.num_inputs == 1 and spec.read_index == -1
    assert spec.source == HRNET and spec.config == HRNET


def test_crowdpose_config() -> None:
    spec = parse_target(CROWD)
    assert spec.channels == 2048 and spec.stride == (32, 32)
    assert spec.num_keypoints == 14 and spec.head_upsample == 8
    assert spec.heatmap_size == (48, 64) and spec.input_size == (192, 256)
    assert spec.config == CROWD


# ---------------------------------------------------------------------------- heads


def test_heatmap_head_with_three_deconvs() -> None:
    spec = target_from_head(dict(type="HeatmapHead", in_channels=48, out_channels=17))
    assert spec.channels == 48 and spec.stride == (32, 32)
    assert spec.head_upsample == 8 and spec.num_keypoints == 17
    assert spec.head_type == "HeatmapHead" and spec.source == "HeatmapHead"


def test_heatmap_head_without_deconvs() -> None:
    spec = parse_target(dict(type="HeatmapHead", in_channels=48, out_channels=17, deconv_out_channels=None))
    assert spec.channels == 48 and spec.stride == (4, 4) and spec.head_upsample == 1


def test_heatmap_head_with_one_deconv_and_another_heatmap_stride() -> None:
    head = dict(
        type="HeatmapHead", in_channels=64, out_channels=17, deconv_out_channels=(32,), deconv_kernel_sizes=(4,)
    )
    assert target_from_head(head).stride == (8, 8)
    assert target_from_head(head, heatmap_stride=2).stride == (4, 4)


def test_head_module_passed_directly() -> None:
    from adaptkit.mm.openmmlab import build_model

    head = build_model(dict(type="HeatmapHead", in_channels=48, out_channels=17))
    params_before = {k: v.clone() for k, v in head.state_dict().items()}
    spec = parse_target(head)
    assert spec.channels == 48 and spec.stride == (32, 32) and spec.num_keypoints == 17
    for key, value in head.state_dict().items():  # tracing leaves the head as it was
        assert torch.equal(value, params_before[key]), key


class UpsampleTwiceHead(nn.Module):
    """A hand-written head: 1x1 conv to keypoints, then x2 bilinear; reads feats[-1]."""

    def __init__(self, in_channels: int = 24, out_channels: int = 5) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, feats):
        return F.interpolate(self.conv(feats[-1]), scale_factor=2, mode="bilinear", align_corners=False)


def test_plain_head_module() -> None:
    spec = parse_target(UpsampleTwiceHead())
    assert spec.channels == 24 and spec.stride == (8, 8)
    assert spec.head_upsample == 2 and spec.num_keypoints == 5 and spec.head_type == "UpsampleTwiceHead"


def test_head_without_in_channels() -> None:
    head = nn.Sequential(nn.Conv2d(8, 4, 1))
    with pytest.raises(
        TargetError, match="head Sequential has no integer in_channels; pass the target as CHANNELS@STRIDE"
    ):
        parse_target(head)


class PoolingHead(nn.Module):
    in_channels = 8

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, feats):
        return self.fc(feats[-1].mean(dim=(2, 3)))


def test_head_that_returns_no_map() -> None:
    with pytest.raises(TargetError, match="the head returns no map"):
        parse_target(PoolingHead())


def test_head_dict_of_an_unknown_type() -> None:
    with pytest.raises((TargetError, ConfigError), match="NoSuchHead"):
        parse_target(dict(type="NoSuchHead", in_channels=8))
