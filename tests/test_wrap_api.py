"""``adaptkit.wrap`` per the public contract: the output is what the target expects, at the
probed size and at other sizes divisible by the backbone's largest stride."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import adaptkit
from adaptkit import Layout, PlanError, SourceError, Strategy, TargetSpec
from adaptkit.core.adapter import ShapeAdapter
from adaptkit.core.wrapping import WrappedBackbone

CROWD = "mmpose::body_2d_keypoint/topdown_heatmap/crowdpose/td-hm_res50_8xb64-210e_crowdpose-256x192.py"
INPUT = (2, 3, 256, 192)


def expected_shape(batch: int, channels: int, hw: tuple[int, int], stride: int | tuple[int, int]) -> tuple[int, ...]:
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    return (batch, channels, hw[0] // sh, hw[1] // sw)


def check_output(wrapped: nn.Module, channels: int, stride, sizes) -> None:
    """A 1-tuple holding one map of the target's channels and size, at every (batch, height, width)."""
    wrapped.eval()
    with torch.no_grad():
        for batch, h, w in sizes:
            out = wrapped(torch.randn(batch, 3, h, w))
            assert isinstance(out, tuple) and len(out) == 1, type(out)
            assert isinstance(out[0], torch.Tensor)
            assert tuple(out[0].shape) == expected_shape(batch, channels, (h, w), stride), (h, w)
            assert torch.isfinite(out[0]).all()


def assert_gradients_reach(wrapped: WrappedBackbone, backbone_param: torch.Tensor, x: torch.Tensor) -> None:
    wrapped.train()
    wrapped.zero_grad()
    wrapped(x)[0].sum().backward()
    assert backbone_param.grad is not None and backbone_param.grad.abs().sum() > 0
    adapter_params = list(wrapped.adapter.parameters())
    assert adapter_params, "the adapter should project here"
    for p in adapter_params:
        assert p.grad is not None and p.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- backbones


@pytest.fixture(scope="module")
def sctnet_s() -> nn.Module:
    return adaptkit.resolve_source("sctnet-s")


@pytest.fixture(scope="module")
def sctnet_32_at_4(sctnet_s: nn.Module) -> WrappedBackbone:
    return adaptkit.wrap(sctnet_s, "32@4", INPUT)


class ResNetStages(nn.Module):
    """torchvision's ResNet-18, returning its four stages as a dict (strides 4, 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = adaptkit.resolve_source("torchvision.models:resnet18")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        out = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(n, name)(x)
            out[name] = x
        return out


class ChannelsLast(nn.Module):
    """Swin-like: patch embedding at stride 4 and a merge to stride 8, both returned NHWC."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 24, 4, 4)
        self.norm1 = nn.LayerNorm(24)
        self.merge = nn.Linear(4 * 24, 48)
        self.norm2 = nn.LayerNorm(48)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.norm1(self.patch(x).permute(0, 2, 3, 1))  # (B, H/4, W/4, 24)
        merged = torch.cat([a[:, 0::2, 0::2], a[:, 1::2, 0::2], a[:, 0::2, 1::2], a[:, 1::2, 1::2]], dim=-1)
        b = self.norm2(self.merge(merged))  # (B, H/8, W/8, 48)
        return [a, b]


class TinyViT(nn.Module):
    """ViT-like: 16x16 patch embedding, a class token, two token MLP layers; returns (B, 1 + N, C)."""

    def __init__(self, dim: int = 48) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 16, 16)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, C), row-major grid
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.fc2(F.gelu(self.fc1(self.norm(tokens))))


class Pooled(nn.Module):
    """A classifier trunk: conv, then global pooling; no spatial output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


# ---------------------------------------------------------------------------- SCTNet-S


def test_sctnet_into_32_at_4(sctnet_s: nn.Module, sctnet_32_at_4: WrappedBackbone) -> None:
    wrapped = sctnet_32_at_4
    assert isinstance(wrapped, WrappedBackbone) and wrapped.backbone is sctnet_s
    assert isinstance(wrapped.adapter, ShapeAdapter)
    assert wrapped.plan.feature.path == "0" and wrapped.plan.out_channels == 32
    assert wrapped.plan.input_shape == INPUT
    check_output(wrapped, 32, 4, [(1, 256, 192), (1, 128, 96), (1, 160, 224)])


def test_sctnet_gradients_reach_backbone_and_adapter(sctnet_s: nn.Module, sctnet_32_at_4: WrappedBackbone) -> None:
    first = next(sctnet_s.parameters())
    assert_gradients_reach(sctnet_32_at_4, first, torch.randn(2, 3, 64, 64))


def test_sctnet_into_the_crowdpose_config(sctnet_s: nn.Module) -> None:
    wrapped = adaptkit.wrap(sctnet_s, CROWD, INPUT)
    target = wrapped.plan.target
    assert target.channels == 2048 and target.stride == (32, 32) and target.config == CROWD
    assert wrapped.plan.feature.path == "2.1.1"  # the stride-32 map
    check_output(wrapped, 2048, 32, [(2, 256, 192), (1, 128, 96)])
    # No input shape: wrap probes at the config's own input size (192x256) at batch 2, as every command does.
    again = adaptkit.wrap(sctnet_s, target)
    assert again.plan.input_shape == (2, 3, 256, 192)
    check_output(again, 2048, 32, [(1, 256, 192)])


def test_sctnet_by_zoo_name_with_select_and_adapt_head() -> None:
    wrapped = adaptkit.wrap("sctnet-s", "32@4", INPUT, select="2.1.2", strategy="adapt-head")
    assert wrapped.plan.feature.path == "2.1.2" and wrapped.plan.strategy is Strategy.ADAPT_HEAD
    assert list(wrapped.adapter.parameters()) == []  # adapt-head: no projection
    check_output(wrapped, 128, 4, [(1, 128, 96)])


# ---------------------------------------------------------------------------- other backbones


def test_torchvision_resnet18_stages_as_a_dict() -> None:
    backbone = ResNetStages()
    wrapped = adaptkit.wrap(backbone, "32@4", INPUT)
    assert wrapped.plan.feature.path == "layer1"
    check_output(wrapped, 32, 4, [(1, 256, 192), (1, 96, 160)])
    deep = adaptkit.wrap(backbone, TargetSpec.single(24, (32, 32)), INPUT)
    assert deep.plan.feature.path == "layer4" and deep.plan.feature.channels == 512
    check_output(deep, 24, 32, [(1, 256, 192), (1, 96, 64)])
    assert_gradients_reach(wrapped, backbone.net.conv1.weight, torch.randn(2, 3, 64, 64))


def test_channels_last_backbone() -> None:
    backbone = ChannelsLast()
    wrapped = adaptkit.wrap(backbone, "32@4", INPUT)
    assert wrapped.plan.feature.layout is Layout.NHWC and wrapped.plan.feature.path == "0"
    check_output(wrapped, 32, 4, [(2, 256, 192), (1, 64, 128)])
    down = adaptkit.wrap(backbone, "16@16", INPUT)
    assert down.plan.feature.path == "1"
    check_output(down, 16, 16, [(2, 256, 192), (1, 128, 64)])
    assert_gradients_reach(wrapped, backbone.patch.weight, torch.randn(2, 3, 64, 64))


def test_token_backbone_with_a_class_token() -> None:
    torch.manual_seed(0)
    backbone = TinyViT()
    wrapped = adaptkit.wrap(backbone, "32@4", INPUT)
    feature = wrapped.plan.feature
    assert feature.layout is Layout.NLC and feature.prefix_tokens == 1 and feature.spatial == (16, 12)
    check_output(wrapped, 32, 4, [(2, 256, 192), (1, 128, 96), (1, 512, 384)])
    assert_gradients_reach(wrapped, backbone.patch.weight, torch.randn(2, 3, 64, 48))


def test_token_backbone_output_equals_the_reference() -> None:
    torch.manual_seed(0)
    backbone = TinyViT().eval()
    wrapped = adaptkit.wrap(backbone, "32@4", INPUT).eval()
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        tokens = backbone(x)
        grid = tokens[:, 1:].transpose(1, 2).reshape(1, 48, 8, 6)
        proj = wrapped.adapter.proj
        ref = F.interpolate(F.conv2d(grid, proj.weight, proj.bias), size=(32, 24), mode="bilinear", align_corners=False)
        (out,) = wrapped(x)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("hw", [(256, 256), (192, 256)])
def test_token_backbone_at_another_aspect_ratio(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    backbone = TinyViT().eval()
    wrapped = adaptkit.wrap(backbone, "32@4", INPUT).eval()
    x = torch.randn(1, 3, *hw)
    gh, gw = hw[0] // 16, hw[1] // 16
    with torch.no_grad():
        grid = backbone(x)[:, 1:].transpose(1, 2).reshape(1, 48, gh, gw)
        proj = wrapped.adapter.proj
        ref = F.interpolate(F.conv2d(grid, proj.weight, proj.bias), size=(hw[0] // 4, hw[1] // 4), mode="bilinear")
        (out,) = wrapped(x)
    torch.testing.assert_close(out, ref)


# ---------------------------------------------------------------------------- errors


def test_backbone_without_a_spatial_output() -> None:
    with pytest.raises(PlanError, match="returns no feature map adaptkit can adapt"):
        adaptkit.wrap(Pooled(), "32@4", INPUT)


def test_no_input_shape_for_a_spec_target() -> None:
    with pytest.raises(PlanError, match=r"no input shape: pass input_shape \(e\.g\. \(2, 3, 256, 192\)\)"):
        adaptkit.wrap(Pooled(), "32@4")


def test_misspelt_option_with_a_module_backbone() -> None:
    with pytest.raises((TypeError, SourceError), match="selct"):
        adaptkit.wrap(ChannelsLast(), "32@4", INPUT, selct="1")


def test_unknown_zoo_name() -> None:
    with pytest.raises(SourceError, match="unknown backbone 'no-such-zoo-name'; zoo names are sctnet"):
        adaptkit.wrap("no-such-zoo-name", "32@4", INPUT)


def test_misspelt_zoo_name_gets_a_suggestion() -> None:
    with pytest.raises(SourceError, match="unknown backbone 'sctnett'; did you mean 'sctnet'"):
        adaptkit.wrap("sctnett", "32@4", INPUT)
