"""Layouts as data, and how the probe recognises each from the shapes it saw.

``LAYOUTS`` is the one table every stage reads: the probe (rank, which axes
scale with the input), the planner (what the layout step does), the adapter
(the einops pattern to NCHW) and fusion. A new layout is a row here plus the
recognition rule below and its tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from adaptkit.core.records import FeatureSpec, Layout

__all__ = ["LayoutInfo", "LAYOUTS", "layout_info", "Leaf", "Shape", "Size", "describe_leaves"]

Size = tuple[int, int]
Shape = tuple[int, ...]

#: prefix tokens (class, distillation, register tokens) accepted from one size alone
_MAX_PREFIX_GUESS = 16


@dataclass(frozen=True)
class LayoutInfo:
    """One row of the layout table.

    ``spatial_axes`` are the axes that scale with the input (for tokens, the
    one token axis holding prefix + grid); ``to_nchw`` is the einops pattern
    the adapter applies (None: already NCHW, or not a map at all).
    """

    layout: Layout
    rank: int | None
    channel_axis: int | None
    spatial_axes: tuple[int, ...]
    to_nchw: str | None
    needs_grid: bool  # the grid (height, width) must be known to lay it out as a map
    is_map: bool  # a spatial feature an adapter can serve
    recognised_by: str
    layout_step: str | None  # what the planner's layout step says it does


LAYOUTS: dict[Layout, LayoutInfo] = {
    info.layout: info
    for info in (
        LayoutInfo(Layout.NCHW, 4, 1, (2, 3), None, False, True,
                   "4-D, axes 2 and 3 scale with the input", None),
        LayoutInfo(Layout.NHWC, 4, 3, (1, 2), "b h w c -> b c h w", False, True,
                   "4-D, axes 1 and 2 scale with the input", "channels-last map to NCHW"),
        LayoutInfo(Layout.NLC, 3, 2, (1,), "b (h w) c -> b c h w", True, True,
                   "3-D, the token count solves N = prefix + (H/s)*(W/s) at both sizes", "tokens to an NCHW map"),
        LayoutInfo(Layout.OTHER, None, None, (), None, False, False,
                   "anything else: vectors, logits, folded batches", None),
    )
}  # fmt: skip


def layout_info(layout: Layout) -> LayoutInfo:
    """The table row for ``layout``."""
    return LAYOUTS[layout]


#: rows whose spatial axes are a (height, width) grid in the tensor itself (not a token sequence)
_GRID_ROWS = tuple(r for r in LAYOUTS.values() if r.is_map and not r.needs_grid)


def _channel_axis(row: LayoutInfo) -> int:
    if row.channel_axis is None:  # pragma: no cover - every map row names its channel axis
        raise ValueError(f"layout {row.layout.value} has no channel axis")
    return row.channel_axis


@dataclass(frozen=True)
class Leaf:
    """One returned tensor, reduced to what the description needs (no storage kept)."""

    path: str
    shape: Shape
    dtype: torch.dtype
    is_input: bool
    alias_of: str | None
    module: str | None = None  # the submodule that returned it, when a submodule did


def describe_leaves(
    first: list[Leaf], size1: Size, later: list[Leaf] | None, size2: Size, target: Size
) -> tuple[FeatureSpec, ...]:
    """FeatureSpecs at the ``target`` size from leaves seen at one or two sizes."""
    by_path = {leaf.path: leaf for leaf in later} if later is not None else {}
    specs = []
    for leaf in first:
        other = by_path.get(leaf.path)
        if other is not None and len(other.shape) == len(leaf.shape):
            specs.append(_from_two(leaf, size1, other.shape, size2, target))
        else:
            specs.append(_from_one(leaf, size1, target))
    return tuple(specs)


def _spec(
    leaf: Leaf,
    shape: Shape,
    layout: Layout,
    channels: int,
    spatial: Size | None,
    target: Size,
    prefix: int = 0,
    patch: int | None = None,
) -> FeatureSpec:
    """``patch``: the stride solved for tokens (a patch size), kept even where the input is not a multiple of it."""
    if spatial is not None and min(spatial) > 0 and spatial[0] * spatial[1] > 1:  # a 1x1 "grid" is a pooled vector
        if patch is not None:
            stride: tuple[float, float] = (patch, patch)
        else:
            stride = (_ratio(target[0], spatial[0]), _ratio(target[1], spatial[1]))
    else:
        spatial, stride = None, (0, 0)
        if layout is not Layout.NLC:
            layout = Layout.OTHER
    return FeatureSpec(
        path=leaf.path,
        shape=shape,
        channels=channels,
        stride=stride,
        layout=layout,
        spatial=spatial,
        prefix_tokens=prefix,
        dtype=str(leaf.dtype).removeprefix("torch."),
        is_input=leaf.is_input,
        alias_of=leaf.alias_of,
        module=leaf.module,
    )


def _other(leaf: Leaf, shape: Shape, target: Size) -> FeatureSpec:
    channels = shape[1] if len(shape) >= 2 else 1
    return _spec(leaf, shape, Layout.OTHER, channels, None, target)


def _from_two(leaf: Leaf, size1: Size, shape2: Shape, size2: Size, target: Size) -> FeatureSpec:
    a, b = leaf.shape, shape2
    changed = [i for i in range(len(a)) if a[i] != b[i]]
    if not changed:
        if len(a) == 4 and max(a[2], a[3]) > 1:  # a map of fixed size (resized inside the model)
            return _spec(leaf, a, Layout.NCHW, a[1], (a[2], a[3]), target)
        fixed = _fixed_tokens(a) if len(a) == 3 else None
        if fixed is not None:  # tokens of a fixed-size grid (the model resizes its input, as CrossViT does)
            side, first = fixed
            return _spec(leaf, a, Layout.NLC, a[2], (side, side), target, first)
        return _other(leaf, a, target)
    if 0 in changed:  # batch folded with positions: no layout adaptkit can undo
        return _other(leaf, _scale_area(a, b, size1, size2, target), target)
    grid_row = next((r for r in _GRID_ROWS if r.rank == len(a) and list(r.spatial_axes) == changed), None)
    if grid_row is not None:
        i, j = grid_row.spatial_axes
        fh = _extrapolate(a[i], b[i], size1[0], size2[0], target[0])
        fw = _extrapolate(a[j], b[j], size1[1], size2[1], target[1])
        shape = list(a)
        shape[i], shape[j] = fh, fw
        return _spec(leaf, tuple(shape), grid_row.layout, a[_channel_axis(grid_row)], (fh, fw), target)
    if len(a) == 3 and changed == [1]:
        solved = _solve_tokens(a[1], size1, b[1], size2)
        if solved is not None:
            stride, grid, prefix = solved
            gh, gw = grid(target[0], stride), grid(target[1], stride)
            return _spec(leaf, (a[0], prefix + gh * gw, a[2]), Layout.NLC, a[2], (gh, gw), target, prefix, stride)
        return _spec(leaf, _scale_area(a, b, size1, size2, target), Layout.NLC, a[2], None, target)
    return _other(leaf, _scale_area(a, b, size1, size2, target), target)


def _from_one(leaf: Leaf, size: Size, target: Size) -> FeatureSpec:
    """Layout from one size only (the model rejected the second): plausible grids."""
    a = leaf.shape
    scale = (target[0] / size[0], target[1] / size[1])
    for row in (r for r in _GRID_ROWS if r.rank == len(a)):  # table order: NCHW before NHWC
        i, j = row.spatial_axes
        fh, fw = a[i], a[j]
        if _grid_like(fh, fw, size):
            fh, fw = round(fh * scale[0]), round(fw * scale[1])
            shape = list(a)
            shape[i], shape[j] = fh, fw
            return _spec(leaf, tuple(shape), row.layout, a[_channel_axis(row)], (fh, fw), target)
    if len(a) == 3:
        guess = _guess_tokens(a[1], size)
        if guess is not None:
            stride, grid, prefix = guess
            gh, gw = grid(target[0], stride), grid(target[1], stride)
            return _spec(leaf, (a[0], prefix + gh * gw, a[2]), Layout.NLC, a[2], (gh, gw), target, prefix, stride)
    return _other(leaf, a, target)


#: the fewest channels a fixed-length (B, N, C) tensor needs to be read as tokens, not as e.g. keypoints
_MIN_TOKEN_CHANNELS = 8


def _fixed_tokens(shape: Shape) -> tuple[int, int] | None:
    """(grid side, prefix tokens) when N = prefix + g * g for a square grid, the fewest prefix tokens first."""
    n, channels = shape[1], shape[2]
    if channels < _MIN_TOKEN_CHANNELS:
        return None
    for prefix in range(min(_MAX_PREFIX_GUESS, n) + 1):
        side = math.isqrt(n - prefix)
        if side >= 2 and side * side == n - prefix:
            return side, prefix
    return None


def _grid_like(fh: int, fw: int, size: Size) -> bool:
    """(fh, fw) could be the input grid at one stride: both axes shrink by about the same factor."""
    if fh < 1 or fw < 1 or fh * fw == 1 or fh > size[0] or fw > size[1]:
        return False
    sh, sw = size[0] / fh, size[1] / fw
    return abs(sh - sw) <= 0.1 * max(sh, sw)


def _floor_div(n: int, s: int) -> int:
    return n // s


def _ceil_div(n: int, s: int) -> int:
    return -(-n // s)


_GRIDS: tuple[Callable[[int, int], int], ...] = (_floor_div, _ceil_div)


def _solve_tokens(n1: int, size1: Size, n2: int, size2: Size) -> tuple[int, Callable[[int, int], int], int] | None:
    """(stride, grid rounding, prefix tokens) with N = prefix + grid(H, s) * grid(W, s) at both sizes."""
    area_change = size2[0] * size2[1] - size1[0] * size1[1]
    if n2 == n1 or area_change == 0 or (n2 - n1) * area_change < 0:
        return None
    estimate = math.sqrt(area_change / (n2 - n1))
    low, high = max(1, math.floor(estimate * 0.75)), math.ceil(estimate * 1.25)
    for stride in sorted(range(low, high + 1), key=lambda s: abs(s - estimate)):
        for grid in _GRIDS:
            p1 = n1 - grid(size1[0], stride) * grid(size1[1], stride)
            p2 = n2 - grid(size2[0], stride) * grid(size2[1], stride)
            if p1 == p2 and 0 <= p1 < n1:
                return stride, grid, p1
    return None


def _guess_tokens(n: int, size: Size) -> tuple[int, Callable[[int, int], int], int] | None:
    """The most plausible token grid at one size: exact strides first, then fewer prefix tokens."""
    found = []
    for stride in range(2, min(size) + 1):
        for grid in _GRIDS:
            cells = grid(size[0], stride) * grid(size[1], stride)
            prefix = n - cells
            if 0 <= prefix <= _MAX_PREFIX_GUESS and cells > 1:
                exact = size[0] % stride == 0 and size[1] % stride == 0
                found.append((not exact, prefix, stride & (stride - 1) != 0, stride, grid))
    if not found:
        return None
    *_, stride, grid = min(found, key=lambda f: f[:4])
    return stride, grid, n - grid(size[0], stride) * grid(size[1], stride)


def _extrapolate(v1: int, v2: int, x1: int, x2: int, x: int) -> int:
    """The value at ``x`` on the line through (x1, v1), (x2, v2); exact when x is x1."""
    if x == x1 or x2 == x1:
        return v1
    return round(v1 + (x - x1) * (v2 - v1) / (x2 - x1))


def _scale_area(a: Shape, b: Shape, size1: Size, size2: Size, target: Size) -> Shape:
    """Dims of an unrecognised layout, extrapolated along the input area."""
    area1, area2, area = size1[0] * size1[1], size2[0] * size2[1], target[0] * target[1]
    return tuple(_extrapolate(u, v, area1, area2, area) if u != v else u for u, v in zip(a, b, strict=True))


def _ratio(num: int, den: int) -> float:
    """num / den, an int when exact (strides print as 8, not 8.0)."""
    return num // den if num % den == 0 else num / den
