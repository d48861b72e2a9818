"""The adapter as a plain ``nn.Module``, built from a plan's settings.

``ShapeAdapter`` is what a config names as the estimator's ``neck``: it
takes the backbone's raw output (any nesting), selects one tensor by path,
fixes its layout, projects its channels with a 1x1 conv and resizes it
bilinearly, in the order the planner chose, and returns a 1-tuple the way
mmpose necks do. ``MultiShapeAdapter`` holds one such branch per map a
multi-input head reads and returns the maps in the head's order (nested
when the head reads stages of units). ``ScaleFusionAdapter`` merges several
scales into the one map a head reads. All settings are plain data, so a
config can hold them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from adaptkit.core.layouts import LAYOUTS, layout_info
from adaptkit.core.records import Layout, MergeRule, parse_enum
from adaptkit.core.shapes import target_size
from adaptkit.core.tree import select
from adaptkit.errors import BuildError, ShapeMismatchError

__all__ = [
    "ShapeAdapter",
    "MultiShapeAdapter",
    "ScaleFusionAdapter",
    "ADAPTERS",
    "build_adapter_module",
    "resize_to",
    "target_size",
]


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False); a no-op when the size already fits."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ShapeAdapter(nn.Module):
    """select -> layout fix -> (project, resize in the cheaper order) -> ``(tensor,)``.

    Args:
        select: path of the backbone output to use ("0", "2.1.1", "stage3", "" for a bare tensor).
        layout: the selected tensor's layout, "NCHW", "NHWC" or "NLC".
        in_channels: channels of the selected feature.
        out_channels: channels the head expects; None or equal to ``in_channels`` means no projection.
        feature_stride: (height, width) stride of the selected feature.
        target_stride: (height, width) stride the head expects.
        project_first: run the 1x1 projection before the resize (cheaper when upsampling).
        prefix_tokens: tokens to drop before the grid (class/distillation tokens) for NLC.
        grid: (height, width) token grid at the probed size, for NLC; other sizes keep its aspect ratio.
    """

    def __init__(
        self,
        select: str,
        in_channels: int,
        feature_stride: Sequence[float],
        target_stride: Sequence[float],
        out_channels: int | None = None,
        layout: str = "NCHW",
        project_first: bool = True,
        prefix_tokens: int = 0,
        grid: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        try:
            self.layout = parse_enum(Layout, layout, "layout")
        except ValueError as exc:
            raise BuildError(str(exc)) from None
        self._layout = layout_info(self.layout)
        if not self._layout.is_map:
            maps = ", ".join(r.layout.value for r in LAYOUTS.values() if r.is_map)
            raise BuildError(f"ShapeAdapter needs a spatial feature ({maps}), got layout {self.layout.value!r}")
        if in_channels <= 0 or (out_channels is not None and out_channels <= 0):
            raise BuildError(f"channels must be positive, got in_channels={in_channels}, out_channels={out_channels}")
        if len(feature_stride) != 2 or len(target_stride) != 2 or min(*feature_stride, *target_stride) <= 0:
            raise BuildError(
                f"strides must be two positive numbers (height, width), got {feature_stride} and {target_stride}"
            )
        if self._layout.needs_grid and grid is None:
            raise BuildError(f"a {self.layout.value} feature needs its grid (height, width) to be laid out as a map")
        if grid is not None and (
            len(grid) != 2 or any(isinstance(g, bool) or not isinstance(g, int) or g <= 0 for g in grid)
        ):
            raise BuildError(f"grid must be two positive integers (height, width), got {grid}")
        if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
            raise BuildError(f"prefix_tokens must be a non-negative integer, got {prefix_tokens!r}")
        self.select = select
        self.in_channels = in_channels
        self.out_channels = out_channels if out_channels is not None else in_channels
        self.feature_stride = tuple(float(s) for s in feature_stride)
        self.target_stride = tuple(float(s) for s in target_stride)
        self.project_first = project_first
        self.prefix_tokens = prefix_tokens
        self.grid = tuple(grid) if grid is not None else None
        self.proj: nn.Conv2d | None = None
        if self.out_channels != in_channels:
            self.proj = nn.Conv2d(in_channels, self.out_channels, kernel_size=1)
            self.init_weights()

    def init_weights(self) -> None:
        """Variance-preserving init for the linear projection (no activation follows it)."""
        if self.proj is not None and self.proj.bias is not None:
            nn.init.kaiming_normal_(self.proj.weight, mode="fan_in", nonlinearity="linear")
            nn.init.zeros_(self.proj.bias)

    @property
    def resizes(self) -> bool:
        return self.feature_stride != self.target_stride

    def to_map(self, feature: torch.Tensor, input_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """The selected feature as an NCHW map, by the layout table's einops pattern."""
        pattern = self._layout.to_nchw
        if pattern is None:
            return feature
        if self._layout.needs_grid:
            tokens = feature[:, self.prefix_tokens :]
            return rearrange(tokens, pattern, h=self._grid_height(tokens.shape[1], input_hw))
        return rearrange(feature, pattern)

    def _grid_height(self, n: int, input_hw: tuple[int, int] | None) -> int:
        """Rows of the token grid: from the input size when known, else the probed grid's aspect ratio."""
        if self.grid is None:  # checked in __init__
            raise BuildError("a token layout needs the probed grid; rebuild the adapter from its plan")
        if input_hw is not None:
            # a patch embedding rounds down (no padding) or up (padded): either grid may be the one
            sh, sw = self.feature_stride
            for rounding in (math.ceil, math.floor):
                gh, gw = max(1, rounding(input_hw[0] / sh - 1e-9)), max(1, rounding(input_hw[1] / sw - 1e-9))
                if gh * gw == n:
                    return gh
            raise ShapeMismatchError(
                f"{n} tokens do not form the grid a {input_hw[0]}x{input_hw[1]} input gives at stride {sh}x{sw}"
            )
        gh, gw = self.grid
        if gh * gw == n:
            return gh
        h = round(math.sqrt(n * gh / gw))  # an estimator's neck sees no input size: keep the probed aspect ratio
        if h <= 0 or n % h:
            raise ShapeMismatchError(
                f"cannot lay out {n} tokens with the probed aspect ratio {gh}x{gw}; "
                "token backbones need the probed aspect ratio inside an estimator"
            )
        return h

    def forward(self, feats: Any, input_hw: tuple[int, int] | None = None) -> tuple[torch.Tensor]:
        x = self.to_map(select(feats, self.select), input_hw)
        size = target_size((x.shape[-2], x.shape[-1]), self.feature_stride, self.target_stride, input_hw)
        if self.proj is not None and self.project_first:
            x = self.proj(x)
        x = resize_to(x, size)
        if self.proj is not None and not self.project_first:
            x = self.proj(x)
        return (x,)

    def extra_repr(self) -> str:
        order = "project, resize" if self.project_first else "resize, project"
        return (
            f"select={self.select!r}, layout={self.layout.value}, {self.in_channels}->{self.out_channels} ch, "
            f"stride {self.feature_stride}->{self.target_stride}, order: {order}"
        )


class MultiShapeAdapter(nn.Module):
    """One ShapeAdapter branch per head input; returns their maps in the head's order.

    Args:
        branches: ShapeAdapter settings (dicts, ``type`` optional), one per map the head reads.
        groups: how the maps nest: ``[4, 4]`` returns two tuples of four maps (MSPN's stages of
            units); None returns one flat tuple.
    """

    def __init__(self, branches: Sequence[dict[str, Any]], groups: Sequence[int] | None = None) -> None:
        super().__init__()
        if groups is not None and (
            any(not isinstance(g, int) or g <= 0 for g in groups) or sum(groups) != len(branches)
        ):
            raise BuildError(f"groups {list(groups)} do not split the {len(branches)} branches")
        self.branches = nn.ModuleList(_branches(branches, "MultiShapeAdapter"))
        self.groups = tuple(groups) if groups is not None else None

    def init_weights(self) -> None:
        for branch in self.branches:
            branch.init_weights()  # type: ignore[operator]

    def forward(self, feats: Any, input_hw: tuple[int, int] | None = None) -> tuple[Any, ...]:
        maps = [branch(feats, input_hw)[0] for branch in self.branches]
        if self.groups is None:
            return tuple(maps)
        nested, start = [], 0
        for size in self.groups:
            nested.append(tuple(maps[start : start + size]))
            start += size
        return tuple(nested)


def _branches(branches: Sequence[dict[str, Any]], owner: str) -> list[ShapeAdapter]:
    if not branches:
        raise BuildError(f"{owner} needs at least one branch")
    made = []
    for branch in branches:
        settings = {k: v for k, v in dict(branch).items() if k != "type"}
        try:
            made.append(ShapeAdapter(**settings))
        except TypeError as exc:
            raise BuildError(f"bad {owner} branch {settings}: {exc}") from None
    return made


class ScaleFusionAdapter(nn.Module):
    """Several backbone scales merged into the one map a head reads; returns ``(map,)``.

    Each branch (a ShapeAdapter) projects its feature to the head's channels
    and resizes it to the head's grid; ``merge`` "sum" adds the maps (FPN's
    top-down sum without the lateral smoothing), "concat" stacks them and a
    1x1 conv brings them back to ``out_channels`` (mmseg's resize_concat).

    Args:
        branches: ShapeAdapter settings, finest scale first; each must end at ``out_channels``.
        out_channels: channels the head reads.
        merge: "sum" or "concat".
    """

    def __init__(self, branches: Sequence[dict[str, Any]], out_channels: int, merge: str = "sum") -> None:
        super().__init__()
        try:
            self.merge = parse_enum(MergeRule, merge, "merge rule")
        except ValueError as exc:
            raise BuildError(str(exc)) from None
        made = _branches(branches, "ScaleFusionAdapter")
        if len(made) < 2:
            raise BuildError("ScaleFusionAdapter merges at least two scales; use a ShapeAdapter for one")
        wrong = [b.select for b in made if b.out_channels != out_channels]
        if wrong:
            raise BuildError(f"every branch must end at {out_channels} channels; {wrong} do not")
        self.branches = nn.ModuleList(made)
        self.out_channels = out_channels
        self.fuse: nn.Conv2d | None = None
        if self.merge is MergeRule.CONCAT:
            self.fuse = nn.Conv2d(len(made) * out_channels, out_channels, kernel_size=1)
        self.init_weights()

    def init_weights(self) -> None:
        for branch in self.branches:
            branch.init_weights()  # type: ignore[operator]
        if self.fuse is not None:
            nn.init.kaiming_normal_(self.fuse.weight, mode="fan_in", nonlinearity="linear")
            nn.init.zeros_(self.fuse.bias)  # type: ignore[arg-type]

    def forward(self, feats: Any, input_hw: tuple[int, int] | None = None) -> tuple[torch.Tensor]:
        maps = [branch(feats, input_hw)[0] for branch in self.branches]
        size = maps[0].shape[-2:]
        if any(m.shape[-2:] != size for m in maps):
            grids = ", ".join(f"{b.select!r}: {tuple(m.shape[-2:])}" for b, m in zip(self.branches, maps, strict=True))
            raise ShapeMismatchError(f"the merged scales do not land on one grid ({grids}); probe at this input size")
        if self.fuse is not None:
            return (self.fuse(torch.cat(maps, dim=1)),)
        out = maps[0]
        for m in maps[1:]:
            out = out + m
        return (out,)

    def extra_repr(self) -> str:
        return f"merge={self.merge.value}, {len(self.branches)} scales -> {self.out_channels} ch"


#: the adapter modules a config may name, by ``type``
ADAPTERS: dict[str, type[nn.Module]] = {
    "ShapeAdapter": ShapeAdapter,
    "MultiShapeAdapter": MultiShapeAdapter,
    "ScaleFusionAdapter": ScaleFusionAdapter,
}


def build_adapter_module(cfg: dict[str, Any]) -> nn.Module:
    """An adapter from its config dict (``type`` defaults to ShapeAdapter)."""
    settings = dict(cfg)
    kind = settings.pop("type", "ShapeAdapter")
    if kind not in ADAPTERS:
        raise BuildError(f"unknown adapter type {kind!r}; one of {', '.join(ADAPTERS)}")
    return ADAPTERS[kind](**settings)
