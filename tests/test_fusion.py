"""adaptkit.fuse: exactness (float64 and fp32), where the projection and resize go, errors, the input left alone."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import adaptkit
from adaptkit import FuseError
from adaptkit.core.adapter import ShapeAdapter, target_size
from adaptkit.core.fusion import AdaptedHead, CompileGuard, FusedConv, Pointwise, Resize, fuse, plan_fusion

from .conftest import CROWDPOSE, HRNET


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Weights and BatchNorm statistics far from their init, so every fold is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen))
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.weight.shape[0] * m.weight[0, 0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / fan_in**0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
    return module


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, bool], dict[str, bool]]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    return state, modes, grads


def assert_untouched(model: nn.Module, before: tuple) -> None:
    state, modes, grads = snapshot(model)
    assert state.keys() == before[0].keys()
    for key, value in state.items():
        assert torch.equal(value, before[0][key]), key
    assert modes == before[1]
    assert grads == before[2]


# ------------------------------------------------------------------------------ synthetic heads


def make_head(kind: str, cmid: int, bias: bool, bn: bool, tail: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    if kind == "1x1":
        layers.append(nn.Conv2d(cmid, 6, 1, bias=bias))
    elif kind == "3x3":
        layers.append(nn.Conv2d(cmid, 6, 3, padding=1, bias=bias))
    elif kind == "3x3-valid":
        layers.append(nn.Conv2d(cmid, 6, 3, padding=0, bias=bias))
    elif kind == "3x3-stride2":
        layers.append(nn.Conv2d(cmid, 6, 3, stride=2, padding=1, bias=bias))
    elif kind == "3x3-reflect":
        layers.append(nn.Conv2d(cmid, 6, 3, padding=1, padding_mode="reflect", bias=bias))
    elif kind == "deconv4":
        layers.append(nn.ConvTranspose2d(cmid, 6, 4, 2, 1, bias=bias))
    elif kind == "deconv3":
        layers.append(nn.ConvTranspose2d(cmid, 6, 3, 2, 1, output_padding=1, bias=bias))
    else:
        raise ValueError(kind)
    if bn:
        layers.append(nn.BatchNorm2d(6))
    if tail:
        layers += [nn.ReLU(), nn.Conv2d(6, 5, 1)]
    return nn.Sequential(*layers)


def pair(cin: int, cmid: int | None, fs: int, ts: int, project_first: bool, head: nn.Module) -> AdaptedHead:
    adapter = ShapeAdapter("1", cin, (fs, fs), (ts, ts), out_channels=cmid, project_first=project_first)
    return randomize(AdaptedHead(adapter, head)).eval()


HEAD_KINDS = ("1x1", "3x3", "3x3-valid", "3x3-stride2", "3x3-reflect", "deconv4", "deconv3")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cin=st.integers(1, 12),
    cmid=st.one_of(st.none(), st.integers(1, 12)),
    fs=st.sampled_from([4, 8, 16]),
    ts=st.sampled_from([2, 4, 8, 16, 32]),
    hw=st.tuples(st.integers(2, 7), st.integers(2, 7)),
    kind=st.sampled_from(HEAD_KINDS),
    bias=st.booleans(),
    bn=st.booleans(),
    tail=st.booleans(),
    project_first=st.booleans(),
    batch=st.integers(1, 2),
)
def test_fused_equals_unfused_property(cin, cmid, fs, ts, hw, kind, bias, bn, tail, project_first, batch):
    mid = cmid if cmid is not None else cin
    size = target_size(hw, (fs, fs), (ts, ts))
    assume(kind != "3x3-valid" or min(size) >= 3)
    assume(kind != "3x3-reflect" or min(size) >= 2)
    model = pair(cin, cmid, fs, ts, project_first, make_head(kind, mid, bias, bn, tail))
    feats = [torch.zeros(1), torch.randn(batch, cin, *hw)]
    before = snapshot(model)

    # float64: the fold is exact math, so the two agree to float64 rounding
    ref64 = copy.deepcopy(model).double()
    fused64 = fuse(ref64)
    x64 = [f.double() for f in feats]
    with torch.no_grad():
        torch.testing.assert_close(fused64(x64), ref64(x64), rtol=1e-10, atol=1e-10)

    fused = fuse(model)
    with torch.no_grad():
        expected = model(feats)
        torch.testing.assert_close(fused(feats), expected, rtol=1e-5, atol=1e-5)
    assert_untouched(model, before)
    assert not fused.training and not any(p.requires_grad for p in fused.parameters())


# ------------------------------------------------------------------------------ placement


def test_resize_moves_past_the_pointwise_head_and_the_projection_folds():
    model = pair(64, 8, 8, 4, True, nn.Sequential(nn.Conv2d(8, 5, 1)))
    plan = plan_fusion(model)
    assert plan.projection == "folded" and plan.fold_into == "0" and not plan.bias_map
    assert plan.layers == ("0+proj", "resize") and plan.resize == "after 0+proj"
    assert plan.macs_after < plan.macs_before
    fused = fuse(model)
    chain = fused.head
    assert isinstance(chain[0], Pointwise)  # a constant bias: a plain 1x1 conv, run as a matrix product on the CPU
    assert chain[0].conv.in_channels == 64 and chain[0].conv.out_channels == 5
    assert isinstance(chain[1], Resize)
    assert fused.neck.proj is None and not fused.neck.resizes


def test_resize_stops_before_a_spatial_layer_and_a_nonlinearity():
    head = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 5, 1))
    plan = plan_fusion(pair(16, 8, 8, 4, True, head))
    assert plan.layers.index("resize") < plan.layers.index("2")  # never past the ReLU
    assert plan.batchnorms_folded == ("1",)
    spatial = nn.Sequential(nn.Conv2d(8, 5, 3, padding=1))
    plan = plan_fusion(pair(4, 8, 8, 4, True, spatial))  # a widening projection folds into the 3x3 conv
    assert plan.layers == ("resize", "0+proj") and plan.bias_map


def test_projection_is_kept_when_folding_would_cost_more():
    # 256 -> 8 then a 3x3 conv 8 -> 256: folding makes a 3x3 conv 256 -> 256
    model = pair(256, 8, 8, 8, True, nn.Sequential(nn.Conv2d(8, 256, 3, padding=1)))
    plan = plan_fusion(model)
    assert plan.projection == "kept" and plan.fold_into is None
    assert "cost more" in plan.reasons[0]
    feats = [torch.zeros(1), torch.randn(2, 256, 5, 6)]
    with torch.no_grad():
        torch.testing.assert_close(fuse(model)(feats), model(feats), rtol=1e-5, atol=1e-5)


def test_projection_is_kept_before_a_grouped_conv():
    model = pair(8, 16, 8, 8, True, nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=4)))
    plan = plan_fusion(model)
    assert plan.projection == "kept" and "grouped" in plan.reasons[0]


def test_bias_map_is_exact_at_the_borders_and_cached_per_size():
    model = pair(4, 6, 32, 32, True, nn.Sequential(nn.ConvTranspose2d(6, 3, 4, 2, 1, bias=False)))
    fused = fuse(model)
    conv = fused.head[0]
    assert isinstance(conv, FusedConv) and conv.bias_kernel is not None
    for hw in ((3, 5), (4, 4), (3, 5)):
        feats = [torch.zeros(1), torch.randn(1, 4, *hw)]
        with torch.no_grad():
            torch.testing.assert_close(fused(feats), model(feats), rtol=1e-5, atol=1e-5)
    assert len(conv._maps) == 2
    fused.double()  # a dtype change drops the cached maps
    assert not conv._maps
    feats = [torch.zeros(1, dtype=torch.float64), torch.randn(1, 4, 3, 5, dtype=torch.float64)]
    with torch.no_grad():
        out = fused(feats)  # weights composed in float32 and widened: float32 agreement, float64 output
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, copy.deepcopy(model).double()(feats), rtol=1e-5, atol=1e-5)


def test_channels_last_gives_the_same_output():
    model = pair(16, 8, 8, 4, False, make_head("deconv4", 8, True, True, True))
    fused = fuse(model, channels_last=True)
    feats = [torch.zeros(1), torch.randn(2, 16, 6, 5)]
    with torch.no_grad():
        out = fused(feats)
        torch.testing.assert_close(out, model(feats), rtol=1e-5, atol=1e-5)
    assert fused.head.channels_last


def test_token_adapter_keeps_its_layout_step():
    adapter = ShapeAdapter("", 12, (16, 16), (8, 8), out_channels=6, layout="NLC", prefix_tokens=1, grid=(4, 3))
    model = randomize(AdaptedHead(adapter, nn.Sequential(nn.Conv2d(6, 4, 1)))).eval()
    tokens = torch.randn(2, 1 + 4 * 3, 12)
    fused = fuse(model)
    assert fused.neck.layout.value == "NLC" and fused.neck.proj is None
    with torch.no_grad():
        torch.testing.assert_close(fused(tokens), model(tokens), rtol=1e-5, atol=1e-5)


def test_pair_input_returns_an_adapted_head():
    adapter = ShapeAdapter("0", 8, (8, 8), (4, 4), out_channels=4)
    fused = fuse((adapter, nn.Sequential(nn.Conv2d(4, 3, 1))))
    assert isinstance(fused, AdaptedHead)
    assert adaptkit.fuse is fuse


# ------------------------------------------------------------------------------ compile


def test_compile_failure_falls_back_with_a_warning():
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    model = pair(8, 4, 8, 4, True, nn.Sequential(nn.Conv2d(4, 3, 1)))
    feats = [torch.zeros(1), torch.randn(1, 8, 4, 4)]
    with pytest.warns(RuntimeWarning, match="torch.compile failed, running eagerly"):
        fused = fuse(model, compile=True, compile_options={"backend": broken_backend})
        with torch.no_grad():
            out = fused(feats)
    guard = fused.head
    assert isinstance(guard, CompileGuard) and "no compiler here" in guard.compile_error
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, then eager without a word
        torch.testing.assert_close(fused(feats), out)
        torch.testing.assert_close(out, model(feats), rtol=1e-5, atol=1e-5)


def test_compile_runs_through_dynamo():
    model = pair(8, 4, 8, 4, True, make_head("deconv4", 4, False, True, True))
    fused = fuse(model, compile=True, compile_options={"backend": "eager"})
    feats = [torch.zeros(1), torch.randn(1, 8, 4, 4)]
    with torch.no_grad():
        torch.testing.assert_close(fused(feats), model(feats), rtol=1e-5, atol=1e-5)
    assert fused.head.compile_error is None


# ------------------------------------------------------------------------------ errors


class Estimatorish(nn.Module):
    def __init__(self, neck: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.backbone = nn.Identity()
        self.neck = neck
        if head is not None:
            self.head = head


class OwnHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 3, 1)

    def forward(self, feats):
        return self.conv(feats[-1])


def test_refuses_a_model_without_an_adaptkit_adapter():
    model = nn.Sequential(nn.Conv2d(3, 4, 1))
    before = snapshot(model)
    with pytest.raises(FuseError, match="no adaptkit adapter in Sequential"):
        fuse(model)
    assert_untouched(model, before)
    with pytest.raises(FuseError, match="the neck is Conv2d, not an adaptkit ShapeAdapter"):
        fuse(Estimatorish(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 3, 1)))
    with pytest.raises(FuseError, match="has no head"):
        fuse(Estimatorish(ShapeAdapter("0", 8, (8, 8), (4, 4), out_channels=4), None))
    with pytest.raises(FuseError, match="takes a model or an"):
        fuse("sctnet-b")  # type: ignore[arg-type]


def test_refuses_a_head_it_does_not_know():
    model = Estimatorish(ShapeAdapter("0", 8, (8, 8), (4, 4), out_channels=4), OwnHead())
    model.train()
    before = snapshot(model)
    with pytest.raises(FuseError, match="does not know the head OwnHead"):
        fuse(model)
    with pytest.raises(FuseError, match="does not know the head OwnHead"):
        plan_fusion(model)
    assert_untouched(model, before)


def test_refuses_a_head_that_does_not_fit_the_adapter():
    model = pair(8, 4, 8, 4, True, nn.Sequential(nn.Conv2d(6, 3, 1)))
    with pytest.raises(FuseError, match="adapter gives 4 channels but the head's first layer takes 6"):
        fuse(model)


# ------------------------------------------------------------------------------ mmpose estimators


@pytest.fixture(scope="module")
def estimators(tmp_path_factory):
    """SCTNet-S in the two stock configs, with non-trivial head weights and BatchNorm statistics."""
    from adaptkit.mm.fragments import wrap_config
    from adaptkit.mm.openmmlab import build_model, load_config

    out = {}
    for name, config in (("hrnet", HRNET), ("crowdpose", CROWDPOSE)):
        fragment = tmp_path_factory.mktemp(name) / "fragment.py"
        wrap_config("sctnet-s", config, fragment)
        model = build_model(load_config(fragment).model)
        model.eval()
        randomize(model.head, seed=1)
        out[name] = model
    return out


def data_samples(n: int, keypoints: int) -> list:
    from mmengine.structures import InstanceData
    from mmpose.structures import PoseDataSample

    samples = []
    for _ in range(n):
        sample = PoseDataSample(metainfo=dict(input_size=(192, 256), flip_indices=list(range(keypoints))))
        instances = InstanceData()
        instances.bbox_centers = np.array([[96.0, 128.0]])
        instances.bbox_scales = np.array([[192.0, 256.0]])
        instances.bboxes = np.array([[0.0, 0.0, 192.0, 256.0]])
        instances.bbox_scores = np.ones(1)
        sample.gt_instances = instances
        samples.append(sample)
    return samples


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hrnet", "crowdpose"])
def test_fused_estimator_matches_forward_and_predict(estimators, name):
    model = estimators[name]
    model.train()  # fuse works from any mode and leaves the original's flags alone
    before = snapshot(model)
    fused = fuse(model)
    assert_untouched(model, before)
    model.eval()
    assert type(fused) is type(model) and fused is not model and not fused.training
    assert fused.neck.proj is None and fused.head.decoder is not None

    x = torch.randn(1, 3, 256, 192, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x, None, mode="tensor")
        out = fused(x, None, mode="tensor")
    scale = expected.abs().max().item()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * scale)

    keypoints = expected.shape[1]
    assert model.test_cfg.get("flip_test")
    with torch.no_grad():
        ref = model.predict(x, data_samples(1, keypoints))
        got = fused.predict(x, data_samples(1, keypoints))
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_allclose(b.pred_instances.keypoints, a.pred_instances.keypoints, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(
            b.pred_instances.keypoint_scores, a.pred_instances.keypoint_scores, rtol=1e-4, atol=1e-5 * scale
        )


@pytest.mark.slow
def test_stock_heads_fuse_the_way_the_plan_says(estimators):
    hrnet = plan_fusion(estimators["hrnet"])
    assert hrnet.fold_into == "final_layer" and hrnet.layers == ("final_layer+proj", "resize")  # 17-ch heatmaps resized
    crowdpose = plan_fusion(estimators["crowdpose"])
    assert crowdpose.fold_into == "deconv_layers.0" and crowdpose.bias_map
    assert len(crowdpose.batchnorms_folded) == 3 and crowdpose.resize is None
    fused = fuse(estimators["crowdpose"])
    widths = {m.in_channels for m in fused.head.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}
    assert 2048 not in widths  # the 2048-channel intermediate is gone
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.head.modules())


def test_compiled_chain_keeps_one_copy_of_the_weights():
    model = pair(8, 4, 8, 4, True, nn.Sequential(nn.Conv2d(4, 3, 1)))
    plain, compiled = fuse(model), fuse(model, compile=True, compile_options={"backend": "eager"})
    assert [k.replace("module.", "", 1) for k in compiled.head.state_dict()] == list(plain.head.state_dict())
    again = copy.deepcopy(compiled)
    assert isinstance(again.head, CompileGuard) and again.head.options == {"backend": "eager"}


def test_fusing_a_fused_model_changes_nothing():
    model = pair(16, 8, 8, 4, True, make_head("1x1", 8, True, True, True))
    once = fuse(model)
    twice = fuse(once)
    assert plan_fusion(once).projection == "none" and plan_fusion(once).resize is None
    feats = [torch.zeros(1), torch.randn(2, 16, 5, 4)]
    with torch.no_grad():
        torch.testing.assert_close(twice(feats), model(feats), rtol=1e-5, atol=1e-5)
