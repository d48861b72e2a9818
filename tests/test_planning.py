"""The planner on hand-made probe records (pure, no forward), then once on a real module.

Also the build stage, which turns a plan into the adapter module and its config dict.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

import adaptkit
from adaptkit import FeatureSpec, Layout, PlanError, ProbeMode, ProbeResult, Strategy, TargetSpec
from adaptkit.core.building import adapter_config, build_adapter
from adaptkit.core.planning import choose_feature, plan_features, plan_from_dict, plan_to_dict
from adaptkit.core.records import InputSpec, StepKind

INPUT = (2, 3, 256, 192)

# ---------------------------------------------------------------------------- hand-made records


def feat(
    path: str,
    channels: int,
    stride: int | tuple[int, int],
    *,
    layout: Layout = Layout.NCHW,
    prefix: int = 0,
    is_input: bool = False,
    alias_of: str | None = None,
    input_hw: tuple[int, int] = (256, 192),
    batch: int = 2,
) -> FeatureSpec:
    """A FeatureSpec as the probe would describe a map at ``stride`` of a ``input_hw`` input."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    h, w = input_hw[0] // sh, input_hw[1] // sw
    shape = {
        Layout.NCHW: (batch, channels, h, w),
        Layout.NHWC: (batch, h, w, channels),
        Layout.NLC: (batch, prefix + h * w, channels),
    }[layout]
    return FeatureSpec(
        path=path,
        shape=shape,
        channels=channels,
        stride=(sh, sw),
        layout=layout,
        spatial=(h, w),
        prefix_tokens=prefix,
        dtype="float32",
        is_input=is_input,
        alias_of=alias_of,
        module=None,
    )


def vector(path: str, channels: int, batch: int = 2) -> FeatureSpec:
    """A pooled vector, the way the probe describes a non-spatial output."""
    return FeatureSpec(
        path=path,
        shape=(batch, channels),
        channels=channels,
        stride=(0, 0),
        layout=Layout.OTHER,
        spatial=None,
        prefix_tokens=0,
        dtype="float32",
        is_input=False,
        alias_of=None,
        module=None,
    )


def result(*features: FeatureSpec, input_shape: tuple[int, ...] = INPUT) -> ProbeResult:
    return ProbeResult(
        features=tuple(features),
        input_shape=input_shape,
        mode=ProbeMode.META,
        params=0,
        seconds=0.0,
        fallback_reason=None,
        layers=None,
    )


def target(channels: int, stride: int | tuple[int, int], **kwargs) -> TargetSpec:
    s = (stride, stride) if isinstance(stride, int) else stride
    return TargetSpec.single(channels, s, **kwargs)


def inputs(*pairs: tuple[int, int], **kwargs) -> TargetSpec:
    return TargetSpec(
        inputs=tuple(InputSpec(channels=c, stride=(s, s), layout=Layout.NCHW) for c, s in pairs), **kwargs
    )


def kinds(plan) -> list[StepKind]:
    return [step.kind for step in plan.steps]


# ---------------------------------------------------------------------------- choosing the feature


def test_closest_stride_wins_over_more_channels() -> None:
    probed = result(feat("s32", 512, 32), feat("s8", 64, 8), feat("s16", 256, 16))
    chosen, reason = choose_feature(probed, target(32, 4))
    assert chosen.path == "s8"
    assert "stride 8 is the closest to the target's 4" in reason


def test_exact_stride_is_said_so() -> None:
    chosen, reason = choose_feature(result(feat("a", 64, 8), feat("b", 16, 4)), target(32, 4))
    assert chosen.path == "b"
    assert "matches the target's exactly" in reason


def test_among_equal_strides_most_channels_wins() -> None:
    probed = result(feat("narrow", 64, 8), feat("wide", 128, 8), feat("far", 1024, 32))
    chosen, reason = choose_feature(probed, target(32, 4))
    assert chosen.path == "wide"
    assert "most channels (128 vs 64 at 'narrow')" in reason


def test_among_equal_strides_and_channels_the_earliest_path_wins() -> None:
    probed = result(feat("zeta", 64, 8), feat("alpha", 64, 8))  # earliest in output order, not by name
    chosen, _ = choose_feature(probed, target(32, 4))
    assert chosen.path == "zeta"


def test_tie_on_channels_is_not_explained_as_most_channels() -> None:
    _, reason = choose_feature(result(feat("zeta", 64, 8), feat("alpha", 64, 8)), target(32, 4))
    assert "most channels" not in reason


def test_stride_distance_is_measured_on_a_log_scale_per_axis() -> None:
    # 16 is two octaves from 4, (4, 16) only one on average: the mixed-stride map is closer.
    probed = result(feat("square16", 512, 16), feat("mixed", 32, (4, 16)))
    chosen, _ = choose_feature(probed, target(32, 4))
    assert chosen.path == "mixed"


def test_never_the_input_passthrough() -> None:
    image = feat("2.0", 3, 1, is_input=True)
    probed = result(image, feat("0", 256, 8))
    chosen, _ = choose_feature(probed, target(3, 1))  # the image matches this target exactly
    assert chosen.path == "0"


def test_never_an_alias() -> None:
    # Hand-made so the alias looks better than its original on every criterion.
    probed = result(feat("0", 64, 16), feat("1", 32, 8), feat("2.1.0", 512, 4, alias_of="0"))
    chosen, _ = choose_feature(probed, target(32, 4))
    assert chosen.path == "1"


def test_user_select_wins() -> None:
    probed = result(feat("0", 128, 8), feat("2.1.1", 256, 32))
    chosen, reason = choose_feature(probed, target(32, 4), select="2.1.1")
    assert chosen.path == "2.1.1"
    assert reason == "selected by the user ('2.1.1')"
    plan = plan_features(probed, target(32, 4), select="2.1.1")
    assert plan.feature.path == "2.1.1" and plan.steps[0].arg("path") == "2.1.1"


def test_select_of_a_missing_path() -> None:
    probed = result(feat("0", 128, 8), feat("1", 64, 8))
    with pytest.raises(PlanError, match=r"no feature at path '7'; the backbone returns: 0, 1"):
        choose_feature(probed, target(32, 4), select="7")


def test_select_of_the_input() -> None:
    probed = result(feat("0", 128, 8), feat("2.0", 3, 1, is_input=True))
    with pytest.raises(PlanError, match=r"'2\.0' names the input image passed through"):
        choose_feature(probed, target(32, 4), select="2.0")


def test_select_of_a_non_spatial_feature() -> None:
    probed = result(feat("0", 128, 8), vector("logits", 1000))
    with pytest.raises(PlanError, match=r"'logits' is .*\[2, 1000\], not a feature map"):
        choose_feature(probed, target(32, 4), select="logits")


def test_no_spatial_feature() -> None:
    probed = result(vector("0", 512), feat("1", 3, 1, is_input=True))
    with pytest.raises(PlanError, match=r"returns no feature map adaptkit can adapt \(it returns 0 \[2, 512\]"):
        plan_features(probed, target(32, 4))


def test_several_inputs_each_take_the_closest_feature_in_the_heads_order() -> None:
    probed = result(feat("0", 32, 4), feat("1", 64, 8), feat("2", 128, 16))
    plan = plan_features(probed, inputs((64, 16), (64, 8), (64, 4)))
    assert [p.feature.path for p in plan.inputs] == ["2", "1", "0"]
    assert [p.index for p in plan.inputs] == [0, 1, 2]
    assert [p.steps[-1].out_shape for p in plan.inputs] == [(2, 64, 16, 12), (2, 64, 32, 24), (2, 64, 64, 48)]
    assert kinds_of(plan.inputs[1]) == [StepKind.SELECT]  # 64 at 8 already
    assert plan.macs == sum(s.macs for p in plan.inputs for s in p.steps)


def test_a_backbone_with_fewer_maps_feeds_several_inputs_from_one_feature() -> None:
    probed = result(feat("0", 32, 8))
    plan = plan_features(probed, inputs((16, 32), (16, 16), (16, 8), (16, 4)))
    assert [p.feature.path for p in plan.inputs] == ["0"] * 4
    assert [p.steps[-1].out_shape[2:] for p in plan.inputs] == [(8, 6), (16, 12), (32, 24), (64, 48)]
    assert "shared with input 0" in plan.inputs[3].reason


def test_select_names_one_path_per_input_or_one_for_all() -> None:
    probed = result(feat("0", 32, 4), feat("1", 64, 8))
    plan = plan_features(probed, inputs((32, 4), (32, 4)), select="1,0")
    assert [p.feature.path for p in plan.inputs] == ["1", "0"]
    plan = plan_features(probed, inputs((32, 4), (32, 4)), select="1")
    assert [p.feature.path for p in plan.inputs] == ["1", "1"]
    with pytest.raises(PlanError, match="--select names 3 paths but the head reads 2 maps"):
        plan_features(probed, inputs((32, 4), (32, 4)), select="0,1,0")


def test_adapt_head_refuses_a_head_that_reads_several_maps() -> None:
    probed = result(feat("0", 32, 4), feat("1", 64, 8))
    with pytest.raises(PlanError, match="adapt-head changes one in_channels, but the head reads 2 maps"):
        plan_features(probed, inputs((32, 4), (32, 8)), strategy=Strategy.ADAPT_HEAD)


def test_a_pooled_input_takes_the_deepest_feature_without_resizing() -> None:
    probed = result(feat("0", 32, 4), feat("1", 512, 32), feat("2", 256, 16))
    plan = plan_features(probed, target(2048, None))  # type: ignore[arg-type]
    assert plan.feature.path == "1" and kinds(plan) == [StepKind.SELECT, StepKind.PROJECT]
    assert "pools its map" in plan.reason


def test_an_exact_grid_the_stride_cannot_give_is_refused() -> None:
    probed = result(feat("0", 32, 8))
    with pytest.raises(PlanError, match="needs exactly a 7x8 \\(width x height\\) map"):
        plan_features(probed, target(32, 32, featuremap_size=(7, 8)))
    plan = plan_features(probed, target(32, 32, featuremap_size=(6, 8)))
    assert plan.steps[-1].out_shape == (2, 32, 8, 6)


def kinds_of(input_plan) -> list[StepKind]:
    return [step.kind for step in input_plan.steps]


# ---------------------------------------------------------------------------- the chain and its order


def test_upsampling_to_fewer_channels_projects_first() -> None:
    plan = plan_features(result(feat("0", 256, 8)), target(32, 4))
    assert kinds(plan) == [StepKind.SELECT, StepKind.PROJECT, StepKind.RESIZE]
    project, resize = plan.steps[1:]
    assert project.in_shape == (2, 256, 32, 24) and project.out_shape == (2, 32, 32, 24)
    assert resize.in_shape == (2, 32, 32, 24) and resize.out_shape == (2, 32, 64, 48)
    assert "lower resolution" in project.why


def _both_orders(batch: int, cin: int, cout: int, hw: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """(project-first MACs, resize-first MACs) written out by hand: 1x1 conv C*O per pixel, 4 per bilinear output."""
    small, big = hw[0] * hw[1], size[0] * size[1]
    project_first = batch * small * cin * cout + batch * cout * big * 4
    resize_first = batch * cin * big * 4 + batch * big * cin * cout
    return project_first, resize_first


@pytest.mark.parametrize(("cin", "cout"), [(32, 256), (256, 32), (64, 64 + 1)])
def test_downsampling_resizes_first_when_that_is_cheaper(cin: int, cout: int) -> None:
    plan = plan_features(result(feat("0", cin, 4)), target(cout, 8))
    project_first, resize_first = _both_orders(2, cin, cout, (64, 48), (32, 24))
    assert resize_first < project_first  # the premise of this case
    assert kinds(plan) == [StepKind.SELECT, StepKind.RESIZE, StepKind.PROJECT]
    assert plan.macs == resize_first
    resize, project = plan.steps[1:]
    assert resize.out_shape == (2, cin, 32, 24) and project.out_shape == (2, cout, 32, 24)


def test_the_chosen_order_is_the_cheaper_one_for_many_shapes() -> None:
    for cin, cout, fs, ts in [(256, 32, 8, 4), (16, 512, 8, 4), (512, 8, 32, 4), (48, 32, 4, 16), (3, 1000, 2, 4)]:
        plan = plan_features(result(feat("0", cin, fs)), target(cout, ts))
        hw = (256 // fs, 192 // fs)
        size = (256 // ts, 192 // ts)
        assert plan.macs == min(_both_orders(2, cin, cout, hw, size)), (cin, cout, fs, ts)


def test_projection_is_explained_truthfully() -> None:
    plan = plan_features(result(feat("0", 256, 4)), target(1, 8))  # projecting first is cheaper here
    assert kinds(plan) == [StepKind.SELECT, StepKind.PROJECT, StepKind.RESIZE]
    project = plan.steps[1]
    assert "lower resolution" not in project.why


def test_cost_numbers_equal_the_hand_computation() -> None:
    # 128 channels at stride 8 (32x24) into 32@4 (64x48), batch 2: project then resize.
    plan = plan_features(result(feat("0", 128, 8)), target(32, 4))
    select, project, resize = plan.steps
    assert (select.macs, select.bytes, select.params) == (0, 0, 0)
    assert project.macs == 2 * 32 * 24 * 128 * 32 == 6_291_456
    assert project.params == 128 * 32 + 32 == 4_128
    assert project.bytes == 2 * 32 * 32 * 24 * 4 == 196_608
    assert project.args == (("in_channels", 128), ("out_channels", 32))
    assert resize.macs == 2 * 32 * 64 * 48 * 4 == 786_432
    assert resize.params == 0
    assert resize.bytes == 2 * 32 * 64 * 48 * 4 == 786_432
    assert resize.arg("size") == (64, 48) and resize.arg("align_corners") is False
    assert plan.macs == 6_291_456 + 786_432
    assert plan.params == 4_128
    assert plan.out_channels == 32


def test_only_a_projection_when_the_stride_matches() -> None:
    plan = plan_features(result(feat("0", 96, 4)), target(32, 4))
    assert kinds(plan) == [StepKind.SELECT, StepKind.PROJECT]
    assert plan.steps[-1].out_shape == (2, 32, 64, 48)


def test_only_a_resize_when_the_channels_match() -> None:
    plan = plan_features(result(feat("0", 32, 16)), target(32, 4))
    assert kinds(plan) == [StepKind.SELECT, StepKind.RESIZE]
    assert plan.params == 0 and plan.out_channels == 32


def test_nothing_to_do_when_the_feature_already_fits() -> None:
    plan = plan_features(result(feat("0", 32, 4)), target(32, 4))
    assert kinds(plan) == [StepKind.SELECT]
    assert plan.macs == 0 and plan.params == 0 and plan.out_channels == 32


def test_non_square_target_stride() -> None:
    plan = plan_features(result(feat("0", 64, 8)), target(16, (4, 8)))
    assert plan.steps[-1].out_shape == (2, 16, 64, 24)


def test_a_target_layout_other_than_nchw_is_refused() -> None:
    with pytest.raises(PlanError, match="NHWC"):
        plan_features(result(feat("0", 32, 4)), target(32, 4, layout=Layout.NHWC))


def test_adapt_head_keeps_the_feature_channels() -> None:
    plan = plan_features(result(feat("0", 256, 8)), target(32, 4), strategy=Strategy.ADAPT_HEAD)
    assert StepKind.PROJECT not in kinds(plan)
    assert kinds(plan) == [StepKind.SELECT, StepKind.RESIZE]
    assert plan.out_channels == 256 and plan.params == 0
    assert plan.strategy is Strategy.ADAPT_HEAD


def test_layout_step_for_nhwc() -> None:
    plan = plan_features(result(feat("0", 96, 4, layout=Layout.NHWC)), target(32, 4))
    assert kinds(plan) == [StepKind.SELECT, StepKind.LAYOUT, StepKind.PROJECT]
    layout = plan.steps[1]
    assert layout.in_shape == (2, 64, 48, 96) and layout.out_shape == (2, 96, 64, 48)
    assert layout.arg("layout") == "NHWC" and layout.macs == 0 and layout.params == 0
    assert "channels-last" in layout.why


def test_layout_step_for_tokens_with_a_class_token() -> None:
    plan = plan_features(result(feat("tokens", 192, 16, layout=Layout.NLC, prefix=1)), target(32, 4))
    assert kinds(plan) == [StepKind.SELECT, StepKind.LAYOUT, StepKind.PROJECT, StepKind.RESIZE]
    layout = plan.steps[1]
    assert layout.in_shape == (2, 1 + 16 * 12, 192) and layout.out_shape == (2, 192, 16, 12)
    assert layout.arg("layout") == "NLC" and layout.arg("prefix_tokens") == 1 and layout.arg("grid") == (16, 12)
    assert "1 prefix token(s) dropped" in layout.why
    assert plan.steps[-1].out_shape == (2, 32, 64, 48)


# ---------------------------------------------------------------------------- serialisation


PLANS = {
    "project-resize": lambda: plan_features(result(feat("0", 128, 8)), target(32, 4)),
    "resize-project": lambda: plan_features(result(feat("0", 32, 4)), target(256, 8, head_type="HeatmapHead")),
    "tokens": lambda: plan_features(result(feat("t", 192, 16, layout=Layout.NLC, prefix=1)), target(32, (4, 8))),
    "adapt-head": lambda: plan_features(
        result(feat("s", 64, 8, layout=Layout.NHWC)), target(32, 4), strategy=Strategy.ADAPT_HEAD
    ),
    "several-nested": lambda: plan_features(
        result(feat("0", 32, 4), feat("1", 64, 8)), inputs((16, 8), (16, 4), (16, 8), (16, 4), groups=(2, 2))
    ),
    "pooled-grid": lambda: plan_features(
        result(feat("0", 32, 8)), target(64, None, kept_neck="GlobalAveragePooling", featuremap_size=(6, 8))
    ),
}


@pytest.mark.parametrize("name", list(PLANS))
def test_plan_to_dict_is_json_and_round_trips(name: str) -> None:
    plan = PLANS[name]()
    data = plan_to_dict(plan)
    text = json.dumps(data)  # raises on anything JSON cannot hold
    assert plan_from_dict(data) == plan
    assert plan_from_dict(json.loads(text)) == plan
    assert data["macs"] == plan.macs and data["params"] == plan.params
    assert data["strategy"] == plan.strategy.value


def _valid_dict() -> dict:
    return json.loads(json.dumps(plan_to_dict(PLANS["project-resize"]())))


def _broken(edit) -> dict:
    data = _valid_dict()
    edit(data)
    return data


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({}, "KeyError: 'target'"),
        ("garbage", "TypeError"),
        (None, "TypeError"),
        ([1, 2, 3], "TypeError"),
        (_broken(lambda d: d.pop("inputs")), "KeyError: 'inputs'"),
        (_broken(lambda d: d["inputs"][0].pop("steps")), "KeyError: 'steps'"),
        (_broken(lambda d: d["inputs"][0]["feature"].pop("layout")), "KeyError: 'layout'"),
        (
            _broken(lambda d: d["inputs"][0]["feature"].update(layout="CHWN")),
            "ValueError: 'CHWN' is not a valid Layout",
        ),
        (_broken(lambda d: d.update(strategy="adapt-everything")), "ValueError"),
        (_broken(lambda d: d["inputs"][0]["steps"][0].update(kind="warp")), "'warp' is not a valid StepKind"),
        (
            _broken(lambda d: d["target"]["inputs"][0].update(channels=0)),
            "target channels must be a positive integer",
        ),
        (_broken(lambda d: d["inputs"][0]["feature"].update(extra=1)), "TypeError"),
    ],
)
def test_plan_from_dict_of_garbage(data, match: str) -> None:
    with pytest.raises(PlanError, match=f"not an adapter plan: .*{match}"):
        plan_from_dict(data)


def test_plan_from_dict_with_args_as_pairs() -> None:
    data = _valid_dict()
    data["inputs"][0]["steps"][0]["args"] = [["path", "0"]]
    with pytest.raises(PlanError, match="not an adapter plan"):
        plan_from_dict(data)


# ---------------------------------------------------------------------------- build stage


def test_adapter_config_follows_the_plan_order() -> None:
    up = adapter_config(PLANS["project-resize"]())
    assert up == dict(
        type="ShapeAdapter",
        select="0",
        layout="NCHW",
        in_channels=128,
        out_channels=32,
        feature_stride=[8, 8],
        target_stride=[4, 4],
        project_first=True,
    )
    down = adapter_config(PLANS["resize-project"]())
    assert down["project_first"] is False and down["out_channels"] == 256
    tokens = adapter_config(PLANS["tokens"]())
    assert tokens["layout"] == "NLC" and tokens["prefix_tokens"] == 1 and tokens["grid"] == [16, 12]
    assert json.loads(json.dumps(tokens)) == tokens  # plain data a config can hold


@pytest.mark.parametrize("name", list(PLANS))
def test_built_adapter_produces_the_planned_shape(name: str) -> None:
    plan = PLANS[name]()
    adapter = build_adapter(plan)
    features = {p.feature.path: p.feature for p in plan.inputs}
    if all(path.isdigit() for path in features):
        outputs: object = [torch.randn(features[str(i)].shape) for i in range(len(features))]
    else:
        outputs = {path: torch.randn(f.shape) for path, f in features.items()}
    out = adapter(outputs, input_hw=plan.input_shape[2:])
    groups = plan.target.groups
    if groups is not None:
        assert [len(group) for group in out] == list(groups)
        out = tuple(t for group in out for t in group)
    assert [tuple(t.shape) for t in out] == [p.steps[-1].out_shape for p in plan.inputs]
    assert sum(p.numel() for p in adapter.parameters()) == plan.params


# ---------------------------------------------------------------------------- plan on a real module


class SmallPyramid(nn.Module):
    """Stride 4 (16 ch), 8 (32 ch) and 16 (64 ch) maps in a list, plus a pooled vector."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.down8 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.down16 = nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1), nn.BatchNorm2d(64), nn.ReLU())

    def forward(self, x: torch.Tensor):
        a = self.stem(x)
        b = self.down8(a)
        c = self.down16(b)
        return [a, b, c, c.mean(dim=(2, 3))]


def test_plan_on_a_real_module() -> None:
    model = SmallPyramid()
    plan = adaptkit.plan(model, "32@4", (2, 3, 256, 192), policy="closest")
    assert plan.feature.path == "0" and plan.feature.channels == 16 and plan.feature.stride == (4, 4)
    assert kinds(plan) == [StepKind.SELECT, StepKind.PROJECT]
    assert plan.steps[-1].out_shape == (2, 32, 64, 48)
    assert plan.target.source == "32@4"
    (out,) = build_adapter(plan)(model(torch.randn(2, 3, 256, 192)))
    assert out.shape == (2, 32, 64, 48)


def test_plan_on_a_real_module_with_select_and_strategy_strings() -> None:
    plan = adaptkit.plan(SmallPyramid(), "32@4", "2x3x128x96", select="2", strategy="adapt-head")
    assert plan.feature.path == "2" and plan.strategy is Strategy.ADAPT_HEAD
    assert kinds(plan) == [StepKind.SELECT, StepKind.RESIZE]
    assert plan.steps[-1].out_shape == (2, 64, 32, 24)


def test_plan_with_an_unknown_strategy() -> None:
    with pytest.raises(PlanError, match="unknown strategy 'adapt-all'; choose one of 'adapt-features', 'adapt-head'"):
        adaptkit.plan(SmallPyramid(), "32@4", (2, 3, 256, 192), strategy="adapt-all")


def test_plan_without_an_input_shape() -> None:
    with pytest.raises(PlanError, match="no input shape: pass input_shape"):
        adaptkit.plan(SmallPyramid(), "32@4")


def test_plan_accepts_a_probe_result() -> None:
    probed = adaptkit.probe(SmallPyramid(), (1, 3, 128, 128))
    plan = adaptkit.plan(probed, target(64, 16))
    assert plan.feature.path == "2" and kinds(plan) == [StepKind.SELECT]
    assert plan.input_shape == (1, 3, 128, 128)


def test_a_second_stage_takes_its_own_maps_when_strides_tie() -> None:
    probed = result(feat("0.0", 16, 8), feat("0.1", 16, 4), feat("1.0", 16, 8), feat("1.1", 16, 4))
    plan = plan_features(probed, inputs((16, 8), (16, 4), (16, 8), (16, 4), groups=(2, 2)))
    assert [p.feature.path for p in plan.inputs] == ["0.0", "0.1", "1.0", "1.1"]
    assert all(len(p.steps) == 1 for p in plan.inputs)  # select only: no projection, no resize
