"""Feature choice that uses the backbone: per-output parameter reach, the policies, merged scales."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import adaptkit
from adaptkit.core.adapter import ScaleFusionAdapter, ShapeAdapter
from adaptkit.core.building import adapter_config, build_adapter
from adaptkit.core.choosing import MIN_SHARE, scale_ladder, usage_warning
from adaptkit.core.planning import plan_features, plan_from_dict, plan_to_dict
from adaptkit.core.probing import probe
from adaptkit.core.reach import parameter_reach, probe_reach
from adaptkit.core.records import FeaturePolicy, MergeRule, StepKind, Strategy
from adaptkit.errors import BuildError, FuseError, PlanError, UnusedBackboneWarning

from .conftest import HRNET
from .pyramid_backbone import Pyramid

SHAPE = (2, 3, 128, 96)


def _params(model: nn.Module, prefix: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))


def test_reach_counts_the_parameters_behind_each_output_and_leaves_the_model_alone() -> None:
    model = Pyramid()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reach = parameter_reach(model, SHAPE, ["c2", "c3", "c5"])
    assert reach is not None
    total = sum(p.numel() for p in model.parameters())
    assert reach.total == total
    assert reach.share(["c2"]) == pytest.approx(_params(model, "stem") / total)
    assert reach.share(["c3"]) == pytest.approx((_params(model, "stem") + _params(model, "layer2")) / total)
    assert reach.share(["c5"]) == 1.0 and reach.share(["c2", "c3"]) == reach.share(["c3"])
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_reach_of_an_output_that_depends_on_no_weight_is_empty() -> None:
    class PassThrough(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * 2, self.conv(x)

    reach = parameter_reach(PassThrough(), SHAPE, ["0", "1"])
    assert reach is not None and reach.share(["0"]) == 0.0 and reach.share(["1"]) == 1.0


@pytest.fixture(scope="module")
def probed() -> tuple[Pyramid, object, object]:
    model = Pyramid()
    result = probe(model, SHAPE)
    return model, result, probe_reach(model, result)


def test_auto_merges_every_coarser_scale_when_the_closest_uses_little(probed) -> None:
    _, result, reach = probed
    plan = plan_features(result, adaptkit.parse_target("32@4"), reach=reach)
    assert plan.paths == ("c2", "c3", "c4", "c5")
    assert plan.last.merge is MergeRule.SUM and plan.uses == 1.0 and usage_warning(plan) is None
    assert [s.kind for s in plan.steps] == [StepKind.SELECT, StepKind.PROJECT, StepKind.MERGE]
    assert "under 50%" in plan.reason
    for branch in plan.last.merged:  # each coarser scale: projected, then resized to the head's grid
        assert branch.steps[-1].out_shape == (2, 32, 32, 24)


def test_closest_keeps_one_feature_and_warns(probed) -> None:
    _, result, reach = probed
    plan = plan_features(result, adaptkit.parse_target("32@4"), policy=FeaturePolicy.CLOSEST, reach=reach)
    assert plan.paths == ("c2",) and plan.uses is not None and plan.uses < MIN_SHARE
    warning = usage_warning(plan)
    assert warning is not None and "'c2'" in warning and "--policy fused" in warning


def test_auto_keeps_the_closest_when_it_uses_most_of_the_backbone(probed) -> None:
    _, result, reach = probed
    plan = plan_features(result, adaptkit.parse_target("32@32"), reach=reach)
    assert plan.paths == ("c5",) and not plan.last.merged and plan.uses == 1.0


def test_auto_without_reach_means_closest(probed) -> None:
    _, result, _ = probed
    plan = plan_features(result, adaptkit.parse_target("32@4"))
    assert plan.paths == ("c2",) and plan.uses is None and usage_warning(plan) is None


def test_deepest_takes_the_feature_behind_the_most_weights(probed) -> None:
    _, result, reach = probed
    plan = plan_features(result, adaptkit.parse_target("32@4"), policy=FeaturePolicy.DEEPEST, reach=reach)
    assert plan.paths == ("c5",) and plan.steps[-1].out_shape == (2, 32, 32, 24)


def test_fused_from_the_closest_stride_down(probed) -> None:
    _, result, reach = probed
    plan = plan_features(result, adaptkit.parse_target("32@8"), policy=FeaturePolicy.FUSED, reach=reach)
    assert plan.paths == ("c3", "c4", "c5")  # the finer c2 is not merged in
    assert [f.path for f in scale_ladder(result, result.feature("c4"), reach)] == ["c4", "c5"]


def test_several_select_paths_merge_those_scales_finest_first(probed) -> None:
    _, result, reach = probed
    plan = plan_features(result, adaptkit.parse_target("32@4"), select="c5, c2", merge=MergeRule.CONCAT, reach=reach)
    assert plan.paths == ("c2", "c5") and plan.last.merge is MergeRule.CONCAT
    merge = plan.steps[-1]
    assert merge.kind is StepKind.MERGE and merge.in_shape == (2, 64, 32, 24) and merge.params == 64 * 32 + 32


@pytest.mark.parametrize(
    "select, policy, strategy, words",
    [
        ("c2,c2", FeaturePolicy.AUTO, Strategy.ADAPT_FEATURES, "names a path twice"),
        ("c2,c9", FeaturePolicy.AUTO, Strategy.ADAPT_FEATURES, "no feature at path 'c9'"),
        ("c2,c5", FeaturePolicy.AUTO, Strategy.ADAPT_HEAD, "adapt-head keeps each feature's own"),
        (None, FeaturePolicy.FUSED, Strategy.ADAPT_HEAD, "adapt-head keeps each feature's own"),
    ],
)
def test_merging_refusals_are_one_line(probed, select, policy, strategy, words) -> None:
    _, result, reach = probed
    with pytest.raises(PlanError, match=words) as err:
        plan_features(
            result, adaptkit.parse_target("32@4"), select=select, policy=policy, reach=reach, strategy=strategy
        )  # fmt: skip
    assert "\n" not in str(err.value)


def test_fused_refused_for_heads_that_read_several_maps_or_pool(probed) -> None:
    _, result, reach = probed
    with pytest.raises(PlanError, match="reads 2 maps"):
        plan_features(result, adaptkit.parse_target("16@8,16@4"), policy=FeaturePolicy.FUSED, reach=reach)
    with pytest.raises(PlanError, match="pools its map"):
        plan_features(result, adaptkit.parse_target({"channels": 64, "stride": None}), policy=FeaturePolicy.FUSED)


def test_fused_needs_more_than_one_stride() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1))
    result = probe(model, SHAPE)
    with pytest.raises(PlanError, match="several strides"):
        plan_features(
            result, adaptkit.parse_target("32@4"), policy=FeaturePolicy.FUSED, reach=probe_reach(model, result)
        )


@pytest.mark.parametrize("merge", list(MergeRule))
def test_merged_plan_round_trips_and_builds_an_exact_adapter(probed, merge) -> None:
    model, result, reach = probed
    plan = plan_features(result, adaptkit.parse_target("32@4"), merge=merge, reach=reach)
    again = plan_from_dict(json.loads(json.dumps(plan_to_dict(plan))))
    assert again == plan
    adapter = build_adapter(again)
    assert isinstance(adapter, ScaleFusionAdapter) and adapter_config(plan)["merge"] == merge.value
    assert sum(p.numel() for p in adapter.parameters()) == plan.params
    feats = model.eval()(torch.randn(2, 3, 128, 96))
    (out,) = adapter(feats)
    assert out.shape == (2, 32, 32, 24)
    maps = [branch(feats)[0] for branch in adapter.branches]
    expected = sum(maps) if merge is MergeRule.SUM else adapter.fuse(torch.cat(maps, dim=1))
    torch.testing.assert_close(out, expected)


def test_scale_fusion_adapter_refuses_bad_settings() -> None:
    one = dict(select="a", in_channels=8, feature_stride=(4, 4), target_stride=(4, 4), out_channels=16)
    with pytest.raises(BuildError, match="at least two scales"):
        ScaleFusionAdapter([one], out_channels=16)
    with pytest.raises(BuildError, match="must end at 16 channels"):
        ScaleFusionAdapter([one, {**one, "select": "b", "out_channels": 8}], out_channels=16)
    with pytest.raises(BuildError, match="unknown merge rule"):
        ScaleFusionAdapter([one, {**one, "select": "b"}], out_channels=16, merge="max")


def test_python_api_warns_when_the_plan_leaves_the_backbone_unused() -> None:
    with pytest.warns(UnusedBackboneWarning, match="depend"):
        adaptkit.plan(Pyramid(), "32@4", SHAPE, policy="closest")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnusedBackboneWarning)
        wrapped = adaptkit.wrap(Pyramid(), "32@4", SHAPE)  # auto merges: no warning
    assert wrapped(torch.randn(2, 3, 128, 96))[0].shape == (2, 32, 32, 24)
    assert isinstance(wrapped.adapter, ScaleFusionAdapter)
    assert isinstance(wrapped.adapter.branches[0], ShapeAdapter)


def test_unknown_policy_or_merge_rule_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="unknown feature policy 'widest'"):
        adaptkit.plan(Pyramid(), "32@4", SHAPE, policy="widest")
    with pytest.raises(PlanError, match="unknown merge rule 'max'"):
        adaptkit.plan(Pyramid(), "32@4", SHAPE, merge="max")


PYRAMID = f"{Path(__file__).with_name('pyramid_backbone.py')}:Pyramid"


def test_cli_plan_prints_each_features_share_and_warns_on_stderr(run_cli) -> None:
    code, out, err = run_cli("plan", PYRAMID, "--target", "32@4", "--input", "2x3x128x96", "--policy", "closest")
    assert code == 0
    assert "uses" in out and "100%" in out and "backbone used:" in out
    assert err.startswith("adaptkit plan: warning: 'c2' depend(s) on only") and err.count("\n") == 1
    code, out, err = run_cli("plan", PYRAMID, "--target", "32@4", "--input", "2x3x128x96", "--json")
    data = json.loads(out)
    assert code == 0 and err == "" and data["uses"] == 1.0 and data["feature_uses"]["c5"] == 1.0
    assert [m["feature"]["path"] for m in data["inputs"][0]["merged"]] == ["c3", "c4", "c5"]


def test_cli_wrap_fuses_by_default_and_the_fragment_trains_in_mmpose(run_cli, tmp_path) -> None:
    from mmengine.config import Config

    from adaptkit.mm.openmmlab import build_model

    out = tmp_path / "pyramid_hrnet.py"
    code, stdout, err = run_cli("wrap", PYRAMID, "--target", HRNET, "--out", str(out), "--fuse-scales", "concat")
    assert code == 0 and err == "" and "backbone used: 100.0%" in stdout
    text = out.read_text()
    assert "type='ScaleFusionAdapter'" in text and "merge='concat'" in text and "# warning" not in text
    model = build_model(Config.fromfile(str(out)).model)
    model.train()
    feats = model.extract_feat(torch.randn(2, 3, 256, 192))
    assert feats[0].shape == (2, 32, 64, 48)
    loss = model.head(feats).pow(2).mean()
    loss.backward()  # every backbone stage gets a gradient through the merged scales
    assert all(p.grad is not None for n, p in model.backbone.named_parameters() if p.requires_grad)


def test_cli_wrap_with_closest_writes_a_warning_line_into_the_fragment(run_cli, tmp_path) -> None:
    out = tmp_path / "closest.py"
    code, _, err = run_cli("wrap", PYRAMID, "--target", HRNET, "--out", str(out), "--policy", "closest", "--quiet")
    assert code == 0 and "warning:" in err
    assert any(line.startswith("# warning: 'c2' depend(s) on only") for line in out.read_text().splitlines())


def test_fuse_refuses_merged_scales_and_leaves_the_model_alone(tmp_path) -> None:
    from mmengine.config import Config

    from adaptkit.core.fusion import fuse
    from adaptkit.mm.fragments import wrap_config
    from adaptkit.mm.openmmlab import build_model

    out = tmp_path / "fused.py"
    wrap_config(PYRAMID, HRNET, out)
    model = build_model(Config.fromfile(str(out)).model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FuseError, match="merges several scales"):
        fuse(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_torchvision_resnet50_into_hrnet_uses_the_whole_backbone_by_default() -> None:
    """The case that silently trained 1 % of ResNet-50: the default now merges c2..c5."""
    from adaptkit.sources import resolve_source

    source = str(Path(__file__).resolve().parents[1] / "examples" / "torchvision_backbone.py") + ":resnet50_features"
    model = resolve_source(source)
    plan = adaptkit.plan(model, HRNET)
    assert plan.paths == ("c2", "c3", "c4", "c5") and plan.uses is not None and plan.uses > 0.99
    with pytest.warns(UnusedBackboneWarning, match=r"'c2' depend\(s\) on only 1\.0%"):
        closest = adaptkit.plan(model, HRNET, policy="closest")
    assert closest.paths == ("c2",)
