"""Targets: spec strings, dicts, mmpose configs (stock and hand-written) and heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from adaptkit import ConfigError, Layout, MissingPackageError, TargetError, TargetSpec
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
    assert spec.layout is Layout.NCHW and spec.num_inputs == 1 and spec.groups is None
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
    spec = TargetSpec.single(48, (8, 8), head_type="X")
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
        ({"inputs": []}, "at least one map"),
        ({"inputs": [{"channels": 8}]}, "needs its channels and its stride"),
        ({"inputs": [{"channels": 8, "stride": 4}], "channels": 8}, "either inputs or channels"),
        ({"inputs": "8@4"}, "inputs must be a list of dicts"),
        (
            {"inputs": [{"channels": 8, "stride": 4}] * 3, "groups": [2, 2]},
            r"groups \(2, 2\) do not split the 3 inputs",
        ),
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
    with pytest.raises(TargetError, match="has no model.head; give a pose estimator config"):
        parse_target(path)


def test_config_without_a_model(tmp_path: Path) -> None:
    path = write_config(tmp_path, "lr = 0.1\n")
    with pytest.raises(TargetError, match="has no model.head"):
        target_from_config(path)


def test_config_without_a_codec(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, resnet18_config("dict(type='HeatmapHead', in_channels=512, out_channels=17)", codec="")
    )
    with pytest.raises(
        TargetError,
        match=r"cannot read head HeatmapHead \(fields: codec.input_size, codec.heatmap_size\) .*no codec input_size",
    ):
        target_from_config(path)


def test_the_head_alone_gives_the_target_without_building_the_backbone(tmp_path: Path) -> None:
    head = "dict(type='HeatmapHead', in_channels=256, out_channels=17)"
    text = resnet18_config(head).replace("dict(type='ResNet', depth=18)", "dict(type='NoSuchNet')")
    spec = target_from_config(write_config(tmp_path, text))
    assert spec.channels == 256 and spec.stride == (32, 32) and spec.head_upsample == 8


def test_an_unreadable_head_falls_back_to_the_stock_backbone_and_checks_it(tmp_path: Path) -> None:
    codec = CODEC.replace("heatmap_size=(48, 64)", "heatmap_size=(47, 64)")  # not 8x a whole grid
    head = "dict(type='HeatmapHead', in_channels=512, out_channels=17)"
    with pytest.raises(TargetError, match="its head produces 48x64 heatmaps but the codec wants 47x64"):
        target_from_config(write_config(tmp_path, resnet18_config(head, codec=codec)))
    with pytest.raises(TargetError, match="inconsistent: its head expects 256 channels but its backbone gives 512"):
        target_from_config(write_config(tmp_path, resnet18_config(head.replace("512", "256"), codec=codec), "b.py"))


def test_an_unknown_head_with_an_unbuildable_backbone_names_both(tmp_path: Path) -> None:
    text = resnet18_config("dict(type='MysteryHead', in_channels=32)").replace(
        "dict(type='ResNet', depth=18)", "dict(type='NoSuchNet')"
    )
    with pytest.raises(
        TargetError,
        match=r"^adaptkit cannot read head MysteryHead \(fields: type: not a head type adaptkit reads\), "
        r"and its stock backbone cannot be built .*NoSuchNet.*; pass the target as CHANNELS@STRIDE$",
    ):
        target_from_config(write_config(tmp_path, text))


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
    assert spec.num_inputs == 1 and spec.groups is None and spec.kept_neck is None
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
    with pytest.raises(TargetError, match="head PoolingHead returns no map; pass its target as a config"):
        parse_target(PoolingHead())


def test_head_dict_of_an_unknown_type() -> None:
    with pytest.raises((TargetError, ConfigError), match="NoSuchHead"):
        parse_target(dict(type="NoSuchHead", in_channels=8))


# ---------------------------------------------------------------------------- several inputs, every head type


def test_several_inputs_spelled_with_commas() -> None:
    spec = parse_target("32@4,64@8x16, 128@16")
    assert [(i.channels, i.stride) for i in spec.inputs] == [(32, (4, 4)), (64, (8, 16)), (128, (16, 16))]
    assert spec.num_inputs == 3 and spec.channels == 128 and spec.stride == (16, 16)
    assert parse_target("32@4,8").num_inputs == 1  # a comma between two strides is still one input


def test_several_inputs_as_a_dict() -> None:
    spec = parse_target({"inputs": [{"channels": 8, "stride": 4}, {"channels": 16, "stride": [8, 8]}], "groups": [2]})
    assert [i.channels for i in spec.inputs] == [8, 16] and spec.groups == (2,)
    pooled = parse_target({"channels": 2048, "stride": None})
    assert pooled.stride is None


def zoo(rel: str) -> str:
    return f"mmpose::{rel}"


@pytest.mark.parametrize(
    ("config", "inputs", "facts"),
    [
        (
            "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py",
            [(768, (32, 32))],
            dict(head_type="RTMCCHead", featuremap_size=(6, 8), input_size=(192, 256), heatmap_size=None),
        ),
        (
            "body_2d_keypoint/simcc/coco/simcc_res50_8xb64-210e_coco-256x192.py",
            [(2048, (32, 32))],
            dict(head_type="SimCCHead", featuremap_size=(6, 8), head_upsample=8),
        ),
        (
            "body_2d_keypoint/simcc/coco/simcc_mobilenetv2_wo-deconv-8xb64-210e_coco-256x192.py",
            [(1280, (32, 32))],
            dict(head_type="SimCCHead", featuremap_size=(6, 8), head_upsample=1),
        ),
        (
            "body_2d_keypoint/topdown_regression/coco/td-reg_res50_rle-8xb64-210e_coco-256x192.py",
            [(2048, None)],
            dict(head_type="RLEHead", kept_neck="GlobalAveragePooling"),
        ),
        (
            "body_2d_keypoint/integral_regression/coco/ipr_res50_dsnt-8xb64-210e_coco-256x256.py",
            [(2048, (32, 32))],
            dict(head_type="DSNTHead", featuremap_size=(8, 8), head_upsample=8, heatmap_size=(64, 64)),
        ),
        (
            "body_2d_keypoint/topdown_heatmap/coco/td-hm_cpm_8xb64-210e_coco-256x192.py",
            [(17, (8, 8))] * 6,
            dict(head_type="CPMHead"),
        ),
        (
            "body_2d_keypoint/topdown_heatmap/coco/td-hm_2xmspn50_8xb32-210e_coco-256x192.py",
            [(256, (32, 32)), (256, (16, 16)), (256, (8, 8)), (256, (4, 4))] * 2,
            dict(head_type="MSPNHead", groups=(4, 4)),
        ),
        (
            "body_2d_keypoint/topdown_heatmap/coco/td-hm_ViTPose-base-simple_8xb64-210e_coco-256x192.py",
            [(768, (4, 4))],
            dict(head_type="HeatmapHead", head_upsample=1),
        ),
        (
            "body_2d_keypoint/topdown_heatmap/coco/cspnext-m_udp_8xb256-210e_coco-256x192.py",
            [(768, (32, 32))],
            dict(head_type="HeatmapHead", head_upsample=8),
        ),
        (
            "body_2d_keypoint/cid/coco/cid_hrnet-w32_8xb20-140e_coco-512x512.py",
            [(480, (4, 4))],
            dict(head_type="CIDHead", input_size=(512, 512)),
        ),
    ],
)
def test_stock_head_types_read_from_the_head_and_codec(config: str, inputs: list, facts: dict) -> None:
    spec = target_from_config(zoo(config))
    assert [(i.channels, i.stride) for i in spec.inputs] == inputs
    for key, value in facts.items():
        assert getattr(spec, key) == value, key


def test_dekr_names_full_mmcv() -> None:
    config = zoo("body_2d_keypoint/dekr/coco/dekr_hrnet-w32_8xb10-140e_coco-512x512.py")
    with pytest.raises(TargetError, match=r"^DEKRHead cannot be built here: it needs full mmcv \(with compiled ops"):
        target_from_config(config)


def test_a_stock_backbone_from_a_missing_package_is_a_typed_error_naming_the_package() -> None:
    from adaptkit.mm.openmmlab import build_config_backbone

    config = zoo("body_2d_keypoint/rtmpose/coco/rtmpose-s_8xb256-420e_coco-256x192.py")
    with pytest.raises(MissingPackageError, match=r"^cannot build 'CSPNeXt' from the config: it needs mmdet, ") as info:
        build_config_backbone(config)
    assert info.value.package == "mmdet" and isinstance(info.value, ConfigError)


def test_pose_lifting_is_refused_in_one_line() -> None:
    config = zoo("body_3d_keypoint/pose_lift/h36m/pose-lift_simplebaseline3d_8xb64-200e_h36m.py")
    with pytest.raises(TargetError, match="^TemporalRegressionHead is a 3D pose-lifting head: it consumes 2D keypoint"):
        target_from_config(config)


# ---------------------------------------------------------------------------- bad input on the command line


def test_wrap_with_an_unknown_head_says_which_fields_and_writes_nothing(tmp_path: Path, run_cli) -> None:
    text = resnet18_config("dict(type='MysteryHead', in_channels=32)").replace(
        "dict(type='ResNet', depth=18)", "dict(type='NoSuchNet')"
    )
    config = write_config(tmp_path, text)
    out = tmp_path / "fragment.py"
    code, stdout, stderr = run_cli("wrap", "sctnet-s", "--target", config, "--out", str(out))
    assert code == 2 and not out.exists() and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert "cannot read head MysteryHead (fields: type: not a head type adaptkit reads)" in stderr


def test_wrap_refuses_pose_lifting_in_one_line(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "fragment.py"
    config = zoo("body_3d_keypoint/pose_lift/h36m/pose-lift_simplebaseline3d_8xb64-200e_h36m.py")
    code, _, stderr = run_cli("wrap", "sctnet-s", "--target", config, "--out", str(out))
    assert code == 2 and not out.exists() and len(stderr.strip().splitlines()) == 1
    assert "3D pose-lifting head" in stderr


def test_doctor_names_the_packages_a_config_pipeline_needs(run_cli) -> None:
    fragment = str(Path(__file__).resolve().parents[1] / "adapters" / "sctnet-b_rtmpose-m_coco-256x192.py")
    _, stdout, _ = run_cli("doctor", "--config", fragment)
    assert "train_pipeline uses mmdet.YOLOXHSVRandomAug, which needs mmdet (not installed)" in stdout
    assert "train_pipeline uses Albumentation, which needs albumentations (not installed)" in stdout
