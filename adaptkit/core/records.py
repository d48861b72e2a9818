"""Frozen records passed between the stages (probe -> plan -> build).

Records hold data only: no printing, no forwarding. Enums turn option
strings into checked values at the public boundary.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

from adaptkit.core.shapes import check_channels, check_stride, short_repr
from adaptkit.errors import OptionError, TargetError

__all__ = [
    "Layout",
    "ProbeMode",
    "Strategy",
    "StepKind",
    "Stride",
    "FeatureSpec",
    "LayerRow",
    "ProbeResult",
    "TargetSpec",
    "PlanStep",
    "AdapterPlan",
    "parse_enum",
]

#: A stride per spatial axis (height, width); ints when exact, floats otherwise.
Stride = tuple[float, float]


class Layout(str, enum.Enum):
    """How a feature tensor lays out its channels and spatial positions."""

    NCHW = "NCHW"
    NHWC = "NHWC"
    NLC = "NLC"  # token sequence (batch, tokens, channels), maybe with prefix tokens
    OTHER = "OTHER"  # not a spatial feature (vector, scalar, 1-D signal...)


class ProbeMode(str, enum.Enum):
    """How the probe ran the backbone."""

    META = "meta"  # shape-only, on the meta device
    REAL = "real"  # real tensors on a small input (fallback)


class Strategy(str, enum.Enum):
    """How the adapter meets the head."""

    ADAPT_FEATURES = "adapt-features"  # keep the head; project to its in_channels
    ADAPT_HEAD = "adapt-head"  # change the head's in_channels; select/resize only


class StepKind(str, enum.Enum):
    """One step of an adapter chain."""

    SELECT = "select"
    LAYOUT = "layout"
    PROJECT = "project"
    RESIZE = "resize"


E = TypeVar("E", bound=enum.Enum)


def parse_enum(enum_type: type[E], value: object, what: str) -> E:
    """Turn a user string into ``enum_type`` or raise a one-line OptionError (a ValueError)."""
    if isinstance(value, enum_type):
        return value
    for member in enum_type:
        if value == member.value or (isinstance(value, str) and value.lower() == str(member.value).lower()):
            return member
    choices = ", ".join(repr(m.value) for m in enum_type)
    raise OptionError(f"unknown {what} {short_repr(value)}; choose one of {choices}")


@dataclass(frozen=True)
class FeatureSpec:
    """One tensor a backbone returns, as the probe saw it.

    ``shape`` is the tensor's shape at the probed input size. ``stride`` is
    input size / spatial size per axis (height, width), ints when exact.
    ``spatial`` is the (height, width) grid, also for token layouts.
    """

    path: str
    shape: tuple[int, ...]
    channels: int
    stride: Stride
    layout: Layout
    spatial: tuple[int, int] | None
    prefix_tokens: int
    dtype: str
    is_input: bool  # the input image passed straight through
    alias_of: str | None  # path of an earlier output that is the same tensor

    @property
    def is_spatial(self) -> bool:
        return self.layout in (Layout.NCHW, Layout.NHWC, Layout.NLC) and self.spatial is not None


@dataclass(frozen=True)
class LayerRow:
    """One row of the per-layer table (``--layers``)."""

    name: str
    type: str
    depth: int
    output_shape: tuple[int, ...] | None
    params: int


@dataclass(frozen=True)
class ProbeResult:
    """Everything a probe learned about a backbone at one input shape."""

    features: tuple[FeatureSpec, ...]
    input_shape: tuple[int, ...]
    mode: ProbeMode
    params: int
    seconds: float
    fallback_reason: str | None
    layers: tuple[LayerRow, ...] | None

    def feature(self, path: str) -> FeatureSpec:
        """The feature at ``path``; KeyError names the paths that exist."""
        for spec in self.features:
            if spec.path == path:
                return spec
        known = ", ".join(s.path for s in self.features)
        raise KeyError(f"no feature at path {path!r}; the backbone returns: {known}")

    @property
    def max_stride(self) -> float:
        strides = [max(s.stride) for s in self.features if s.is_spatial and not s.is_input]
        return max(strides) if strides else 1


@dataclass(frozen=True)
class TargetSpec:
    """What a head consumes.

    ``stride`` is input size / feature size per axis (height, width).
    ``num_inputs`` is how many maps the head is given and ``read_index``
    which of them it reads (mmpose's HeatmapHead reads ``feats[-1]``).
    ``heatmap_size`` and ``input_size`` are (width, height), as mmpose's
    codecs write them.
    """

    channels: int
    stride: Stride
    layout: Layout = Layout.NCHW
    num_inputs: int = 1
    read_index: int = -1
    head_type: str | None = None
    num_keypoints: int | None = None
    heatmap_size: tuple[int, int] | None = None
    input_size: tuple[int, int] | None = None
    head_upsample: int = 1  # the head's own upsampling factor (deconvs)
    source: str = "spec"  # where it came from: "spec", a config path, a head type
    config: str | None = None  # the config it was read from, when any

    def __post_init__(self) -> None:
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels <= 0:
            raise TargetError(f"target channels must be a positive integer, got {short_repr(self.channels)}")
        check_channels(self.channels, TargetError)
        if (
            not isinstance(self.stride, tuple)
            or len(self.stride) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0 for s in self.stride)
        ):
            raise TargetError(
                f"target stride must be two positive numbers (height, width), got {short_repr(self.stride)}"
            )
        for s in self.stride:
            check_stride(s, TargetError)
        if self.num_inputs < 1:
            raise TargetError(f"a head reads at least one map, got num_inputs={self.num_inputs}")


@dataclass(frozen=True)
class PlanStep:
    """One step of the adapter chain and what it costs at the probed shape.

    ``macs`` counts multiply-accumulates, ``bytes`` the fp32 output it writes.
    ``args`` holds the step's settings as plain data (JSON-safe).
    """

    kind: StepKind
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    macs: int
    bytes: int
    params: int
    args: tuple[tuple[str, object], ...]
    why: str

    def arg(self, name: str) -> object:
        return dict(self.args)[name]


@dataclass(frozen=True)
class AdapterPlan:
    """The chosen feature and the minimal chain of steps to serve the target."""

    feature: FeatureSpec
    target: TargetSpec
    strategy: Strategy
    steps: tuple[PlanStep, ...]
    input_shape: tuple[int, ...]
    reason: str  # why this feature was chosen, in words

    @property
    def out_channels(self) -> int:
        return self.steps[-1].out_shape[1] if self.steps else self.feature.channels

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.steps)

    @property
    def params(self) -> int:
        return sum(s.params for s in self.steps)
