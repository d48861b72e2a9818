"""ShapeAdapter, target_size and resize_to: layouts, nested selection, exact commutation, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from adaptkit import BuildError
from adaptkit.core.adapter import ShapeAdapter, resize_to, target_size

# ---------------------------------------------------------------------------- helpers


def tokens_from_map(feature_map: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """(B, C, H, W) -> (B, prefix + H*W, C), prefix tokens first, row-major grid after."""
    b, c, _, _ = feature_map.shape
    prefix_tokens = torch.full((b, prefix, c), 1e3)  # loud values: any leak into the map shows up
    return torch.cat([prefix_tokens, feature_map.flatten(2).transpose(1, 2)], dim=1)


def reference(feature_map: torch.Tensor, proj: nn.Conv2d | None, size: tuple[int, int]) -> torch.Tensor:
    """Project then resize, written out with the functional ops."""
    x = feature_map if proj is None else F.conv2d(feature_map, proj.weight, proj.bias)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def with_random_bias(adapter: ShapeAdapter) -> ShapeAdapter:
    """The default init zeroes the bias; a non-zero one tests that the commutation holds with bias."""
    assert adapter.proj is not None
    with torch.no_grad():
        adapter.proj.bias.normal_()
    return adapter


# ---------------------------------------------------------------------------- target_size / resize_to


def test_target_size_from_input_hw_is_exact() -> None:
    # Feature size is ignored when the input size is known.
    assert target_size((999, 1), (8, 8), (4, 4), input_hw=(256, 192)) == (64, 48)
    assert target_size((8, 6), (32, 32), (4, 8), input_hw=(256, 192)) == (64, 24)


def test_target_size_from_feature_size_scales_by_stride_ratio() -> None:
    assert target_size((32, 24), (8, 8), (4, 4)) == (64, 48)
    assert target_size((64, 48), (4, 4), (32, 32)) == (8, 6)
    assert target_size((10, 7), (16, 8), (4, 4)) == (40, 14)


def test_target_size_never_returns_zero() -> None:
    assert target_size((2, 2), (4, 4), (64, 64)) == (1, 1)
    assert target_size((2, 2), (4, 4), (64, 64), input_hw=(8, 8)) == (1, 1)


def test_resize_to_is_a_no_op_at_the_right_size() -> None:
    x = torch.randn(1, 3, 5, 7)
    assert resize_to(x, (5, 7)) is x
    y = resize_to(x, (10, 14))
    assert y.shape == (1, 3, 10, 14)
    torch.testing.assert_close(y, F.interpolate(x, size=(10, 14), mode="bilinear", align_corners=False))


# ---------------------------------------------------------------------------- layouts in nested outputs


def test_nchw_in_a_dict_projects_and_resizes_like_the_reference() -> None:
    torch.manual_seed(0)
    feature = torch.randn(2, 16, 8, 6)
    outputs = {"stem": torch.randn(2, 4, 32, 24), "stage3": feature, "pooled": torch.randn(2, 16)}
    adapter = with_random_bias(
        ShapeAdapter("stage3", in_channels=16, feature_stride=(8, 8), target_stride=(4, 4), out_channels=5)
    )
    out = adapter(outputs)
    assert isinstance(out, tuple) and len(out) == 1
    assert out[0].shape == (2, 5, 16, 12)
    torch.testing.assert_close(out[0], reference(feature, adapter.proj, (16, 12)))


def test_nchw_in_a_list_of_lists_selects_by_dotted_path() -> None:
    torch.manual_seed(0)
    a, b, c = torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 12, 4, 4)
    outputs = [a, [b, [c, a]]]
    adapter = ShapeAdapter("1.1.0", in_channels=12, feature_stride=(16, 16), target_stride=(16, 16))
    (out,) = adapter(outputs)
    assert adapter.proj is None
    assert out is c  # same channels, same stride: nothing to do


def test_nhwc_feature_is_laid_out_as_nchw() -> None:
    torch.manual_seed(0)
    feature_map = torch.randn(2, 6, 5, 7)
    outputs = {"maps": [torch.randn(2, 3), feature_map.permute(0, 2, 3, 1).contiguous()]}
    adapter = ShapeAdapter("maps.1", in_channels=6, feature_stride=(4, 4), target_stride=(4, 4), layout="NHWC")
    (out,) = adapter(outputs)
    assert out.shape == (2, 6, 5, 7)
    torch.testing.assert_close(out, feature_map)


def test_nlc_with_one_prefix_token_drops_it_and_lays_out_the_grid() -> None:
    torch.manual_seed(0)
    feature_map = torch.randn(2, 8, 4, 3)  # non-square grid, so a transposed layout would show
    outputs = [[torch.randn(2, 10), tokens_from_map(feature_map, prefix=1)]]
    adapter = ShapeAdapter(
        "0.1",
        in_channels=8,
        feature_stride=(16, 16),
        target_stride=(16, 16),
        layout="nlc",
        prefix_tokens=1,
        grid=(4, 3),
    )
    (out,) = adapter(outputs)
    torch.testing.assert_close(out, feature_map)


def test_nlc_with_projection_and_resize_matches_the_reference() -> None:
    torch.manual_seed(0)
    feature_map = torch.randn(2, 8, 4, 3)
    adapter = with_random_bias(
        ShapeAdapter("", 8, (16, 16), (4, 4), out_channels=3, layout="NLC", prefix_tokens=1, grid=(4, 3))
    )
    (out,) = adapter(tokens_from_map(feature_map, prefix=1))
    assert out.shape == (2, 3, 16, 12)
    torch.testing.assert_close(out, reference(feature_map, adapter.proj, (16, 12)))


def test_nlc_adapter_at_another_input_size_with_the_same_aspect_ratio() -> None:
    torch.manual_seed(0)
    adapter = ShapeAdapter("", 8, (16, 16), (4, 4), out_channels=4, layout="NLC", prefix_tokens=1, grid=(4, 3))
    bigger = torch.randn(1, 8, 8, 6)  # twice the probed grid, same 4:3 aspect ratio
    (out,) = adapter(tokens_from_map(bigger, prefix=1))
    assert out.shape == (1, 4, 32, 24)
    torch.testing.assert_close(out, reference(bigger, adapter.proj, (32, 24)))
    (out_hw,) = adapter(tokens_from_map(bigger, prefix=1), input_hw=(128, 96))
    torch.testing.assert_close(out_hw, out)


def test_nlc_adapter_uses_the_input_size_to_lay_out_the_grid() -> None:
    torch.manual_seed(0)
    adapter = ShapeAdapter("", 8, (16, 16), (16, 16), layout="NLC", prefix_tokens=1, grid=(16, 12))
    transposed = torch.randn(1, 8, 12, 16)  # input 192x256 instead of the probed 256x192
    (out,) = adapter(tokens_from_map(transposed, prefix=1), input_hw=(192, 256))
    torch.testing.assert_close(out, transposed)


def test_nlc_adapter_names_the_problem_when_tokens_do_not_fit_the_grid() -> None:
    adapter = ShapeAdapter("", 8, (16, 16), (16, 16), layout="NLC", prefix_tokens=1, grid=(4, 3))
    with pytest.raises(RuntimeError, match="cannot lay out 13 tokens"):
        adapter(torch.randn(1, 14, 8))


# ---------------------------------------------------------------------------- projection and resize commute


@pytest.mark.parametrize(
    ("in_hw", "feature_stride", "target_stride"),
    [
        ((8, 6), (8, 8), (4, 4)),  # upsampling, non-square
        ((7, 5), (16, 16), (4, 4)),  # upsampling x4, odd sizes
        ((32, 24), (4, 4), (8, 8)),  # downsampling
        ((33, 20), (4, 4), (16, 8)),  # downsampling, other factor per axis
        ((8, 12), (8, 8), (4, 16)),  # up in height, down in width
    ],
)
def test_projection_and_resize_commute_exactly_bias_included(in_hw, feature_stride, target_stride) -> None:
    torch.manual_seed(0)
    first = with_random_bias(ShapeAdapter("", 24, feature_stride, target_stride, out_channels=10, project_first=True))
    second = ShapeAdapter("", 24, feature_stride, target_stride, out_channels=10, project_first=False)
    second.load_state_dict(first.state_dict())
    x = torch.randn(2, 24, *in_hw)
    (a,) = first(x)
    (b,) = second(x)
    expected_hw = target_size(in_hw, feature_stride, target_stride)
    assert a.shape == b.shape == (2, 10, *expected_hw)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_order_changes_only_where_the_projection_runs() -> None:
    up = ShapeAdapter("", 64, (8, 8), (4, 4), out_channels=8, project_first=True)
    seen: list[tuple[int, ...]] = []
    assert up.proj is not None
    up.proj.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    up(torch.randn(1, 64, 4, 3))
    assert seen == [(1, 64, 4, 3)]  # the projection saw the small map
    down = ShapeAdapter("", 8, (4, 4), (8, 8), out_channels=64, project_first=False)
    assert down.proj is not None
    down.proj.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    down(torch.randn(1, 8, 8, 6))
    assert seen[-1] == (1, 8, 4, 3)


def test_input_hw_sets_the_output_size() -> None:
    adapter = ShapeAdapter("", 4, (32, 32), (4, 4), out_channels=2)
    (out,) = adapter(torch.randn(1, 4, 9, 7), input_hw=(288, 224))
    assert out.shape == (1, 2, 72, 56)
    (out,) = adapter(torch.randn(1, 4, 9, 7))
    assert out.shape == (1, 2, 72, 56)


# ---------------------------------------------------------------------------- construction errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(layout="NCWH"), "unknown layout 'NCWH'"),
        (dict(layout="OTHER"), "needs a spatial feature"),
        (dict(in_channels=0), "channels must be positive"),
        (dict(out_channels=-3), "channels must be positive"),
        (dict(feature_stride=(8,)), "strides must be two positive numbers"),
        (dict(target_stride=(4, 4, 4)), "strides must be two positive numbers"),
        (dict(feature_stride=(0, 8)), "strides must be two positive numbers"),
        (dict(target_stride=(4, -4)), "strides must be two positive numbers"),
        (dict(layout="NLC"), "needs its grid"),
    ],
)
def test_bad_settings_raise_build_error(kwargs, match) -> None:
    settings = dict(select="0", in_channels=8, feature_stride=(8, 8), target_stride=(4, 4), out_channels=4)
    settings.update(kwargs)
    with pytest.raises(BuildError, match=match):
        ShapeAdapter(**settings)


@pytest.mark.parametrize("kwargs", [dict(grid=(0, 4)), dict(grid=(4,)), dict(grid=(4, 3), prefix_tokens=-1)])
def test_bad_token_settings_raise_build_error(kwargs) -> None:
    with pytest.raises(BuildError):
        ShapeAdapter("", 8, (16, 16), (4, 4), layout="NLC", **kwargs)


def test_select_of_a_missing_path_names_it() -> None:
    adapter = ShapeAdapter("stage9", 8, (8, 8), (8, 8))
    with pytest.raises(KeyError, match="stage9"):
        adapter({"stage3": torch.randn(1, 8, 4, 4)})


# ---------------------------------------------------------------------------- training and state


def test_gradients_reach_the_projection_and_the_input() -> None:
    adapter = ShapeAdapter("", 8, (8, 8), (4, 4), out_channels=4)
    x = torch.randn(2, 8, 4, 3, requires_grad=True)
    adapter(x)[0].square().sum().backward()
    assert adapter.proj is not None
    assert adapter.proj.weight.grad is not None and adapter.proj.weight.grad.abs().sum() > 0
    assert adapter.proj.bias.grad is not None and adapter.proj.bias.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_projection_init_is_variance_preserving() -> None:
    torch.manual_seed(0)
    adapter = ShapeAdapter("", 256, (4, 4), (4, 4), out_channels=256)  # same channels: no projection at all
    assert adapter.proj is None and list(adapter.parameters()) == []
    adapter = ShapeAdapter("", 256, (4, 4), (4, 4), out_channels=64)
    assert adapter.proj is not None and torch.count_nonzero(adapter.proj.bias) == 0
    (out,) = adapter(torch.randn(4, 256, 16, 16))
    assert 0.7 < out.std().item() < 1.3


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    source = with_random_bias(ShapeAdapter("1", 16, (8, 8), (4, 4), out_channels=6))
    torch.manual_seed(1)
    copy = ShapeAdapter("1", 16, (8, 8), (4, 4), out_channels=6)
    assert set(source.state_dict()) == {"proj.weight", "proj.bias"}
    outputs = [torch.randn(1, 3, 32, 24), torch.randn(1, 16, 4, 3)]
    assert not torch.allclose(source(outputs)[0], copy(outputs)[0])
    copy.load_state_dict(source.state_dict())
    torch.testing.assert_close(copy(outputs)[0], source(outputs)[0])


def test_extra_repr_states_the_order() -> None:
    text = repr(ShapeAdapter("2.1.1", 256, (32, 32), (4, 4), out_channels=32, project_first=False))
    assert "select='2.1.1'" in text and "256->32 ch" in text and "order: resize, project" in text
