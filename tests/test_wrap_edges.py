"""wrap on odd backbones: bf16, tokens at sizes the patch does not divide, fixed-length tokens, 1x1 'grids'."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import adaptkit
from adaptkit.core.records import Layout
from adaptkit.errors import ShapeMismatchError


class ViT(nn.Module):
    """Patch 16 without padding (the grid rounds down) and one class token."""

    def __init__(self, resize_to: int | None = None) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 16, 16)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 16))
        self.resize_to = resize_to

    def forward(self, x):
        if self.resize_to is not None:  # CrossViT-like: every input becomes one fixed size
            x = F.interpolate(x, size=(self.resize_to, self.resize_to))
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], 1)


def test_tokens_at_a_size_the_patch_does_not_divide_keep_the_patch_stride():
    feature = adaptkit.probe(ViT(), (2, 3, 230, 230)).features[0]
    assert feature.layout is Layout.NLC and feature.stride == (16, 16) and feature.spatial == (14, 14)
    wrapped = adaptkit.wrap(ViT(), "32@4", (2, 3, 230, 230))
    for hw, out in (((230, 230), (58, 58)), ((224, 224), (56, 56)), ((250, 200), (63, 50))):
        assert wrapped(torch.randn(1, 3, *hw))[0].shape == (1, 32, *out)


def test_fixed_length_tokens_are_tokens_not_other():
    feature = adaptkit.probe(ViT(resize_to=240), (2, 3, 224, 224)).features[0]
    assert feature.layout is Layout.NLC and feature.spatial == (15, 15) and feature.prefix_tokens == 1


def test_a_1x1_map_is_not_a_grid():
    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3), keepdim=True)

    class OnlyOneSize(Pooled):
        def forward(self, x):
            if x.shape[-1] != 224:
                raise ValueError("224 only")
            return super().forward(x)

    for model in (Pooled(), OnlyOneSize()):
        feature = adaptkit.probe(model, (2, 3, 224, 224)).features[0]
        assert feature.layout is Layout.OTHER and not feature.is_spatial


def test_keypoint_like_fixed_tensors_stay_other():
    class Points(nn.Module):
        def forward(self, x):
            return x.new_zeros(x.shape[0], 17, 2)

    assert adaptkit.probe(Points(), (2, 3, 64, 64)).features[0].layout is Layout.OTHER


def test_a_token_count_that_fits_no_grid_is_a_typed_error():
    wrapped = adaptkit.wrap(ViT(), "32@4", (2, 3, 224, 224))
    with pytest.raises(ShapeMismatchError, match="do not form the grid"):
        wrapped.adapter(torch.zeros(1, 1 + 50, 16), input_hw=(224, 224))


def test_a_bf16_backbone_gets_a_bf16_adapter():
    backbone = nn.Conv2d(3, 16, 4, 4).to(torch.bfloat16)
    wrapped = adaptkit.wrap(backbone, "32@2", (2, 3, 64, 64))
    assert {p.dtype for p in wrapped.adapter.parameters()} == {torch.bfloat16}
    (out,) = wrapped(torch.randn(2, 3, 64, 64, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 32, 32, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_backbone_gets_a_cuda_adapter():
    backbone = nn.Conv2d(3, 16, 4, 4).cuda()
    wrapped = adaptkit.wrap(backbone, "32@2", (2, 3, 64, 64))
    assert {p.device.type for p in wrapped.adapter.parameters()} == {"cuda"}
    (out,) = wrapped(torch.randn(2, 3, 64, 64, device="cuda"))
    assert out.shape == (2, 32, 32, 32)


def test_compile_guard_keeps_compiling_after_a_bad_input():
    from adaptkit.core.fused_modules import CompileGuard

    guard = CompileGuard(nn.Linear(4, 2), {"backend": "eager"})
    with pytest.raises(RuntimeError):
        guard(torch.randn(3, 5))  # the input is wrong, not the compiler
    assert guard.compile_error is None and guard.__dict__["_compiled"] is not None
    assert guard(torch.randn(3, 4)).shape == (3, 2)


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.bool])
def test_features_that_are_not_real_floats_are_never_planned(dtype):
    from adaptkit.errors import PlanError

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 4, 4)

        def forward(self, x):
            return self.conv(x).to(dtype)

    with pytest.raises(PlanError, match="no feature map adaptkit can adapt"):
        adaptkit.wrap(Odd(), "16@4", (2, 3, 32, 32))
    with pytest.raises(PlanError, match="real floating-point"):
        adaptkit.wrap(Odd(), "16@4", (2, 3, 32, 32), select="")
