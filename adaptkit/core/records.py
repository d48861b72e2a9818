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
    "FeaturePolicy",
    "MergeRule",
    "Stride",
    "FeatureSpec",
    "LayerRow",
    "ProbeResult",
    "InputSpec",
    "TargetSpec",
    "PlanStep",
    "InputPlan",
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
    MERGE = "merge"  # several maps at the target's grid into one (sum, or concat + 1x1)


class FeaturePolicy(str, enum.Enum):
    """How the planner picks the feature(s) for a head input when the user selects none."""

    AUTO = "auto"  # closest, unless it leaves most of the backbone unused: then fused
    CLOSEST = "closest"  # the one feature nearest the target stride (least resizing)
    DEEPEST = "deepest"  # the one feature that depends on the most of the backbone
    FUSED = "fused"  # the closest and one feature per coarser stride, merged into one map


class MergeRule(str, enum.Enum):
    """How several scales become one map, each first projected and resized to the target."""

    SUM = "sum"  # FPN-style: add the maps
    CONCAT = "concat"  # mmseg's resize_concat: stack the maps, then a 1x1 conv back to the target channels


E = TypeVar("E", bound=enum.Enum)


def parse_enum(enum_type: type[E], value: object, what: str) -> E:
    """Turn a user string into ``enum_type`` or raise a one-line ValueError."""
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
    module: str | None  # the submodule whose forward returned it (e.g. layer3); None: made in the top forward

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
class InputSpec:
    """One map a head reads: its channels, its stride and its layout.

    ``stride`` is input size / map size per axis (height, width); None when
    any stride serves, because the head pools the map to a vector first
    (a regression head behind a GlobalAveragePooling neck).
    """

    channels: int
    stride: Stride | None
    layout: Layout

    def __post_init__(self) -> None:
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels <= 0:
            raise TargetError(f"target channels must be a positive integer, got {short_repr(self.channels)}")
        check_channels(self.channels, TargetError)
        if self.stride is not None and (
            not isinstance(self.stride, tuple)
            or len(self.stride) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0 for s in self.stride)
        ):
            raise TargetError(
                f"target stride must be two positive numbers (height, width), got {short_repr(self.stride)}"
            )
        for s in self.stride or ():
            check_stride(s, TargetError)
        if not isinstance(self.layout, Layout):
            raise TargetError(f"target layout must be a Layout, got {self.layout!r}")


@dataclass(frozen=True)
class TargetSpec:
    """What a head consumes: the maps it reads, and the codec facts around them.

    ``inputs`` holds one InputSpec per map, in the order the head indexes
    them (a single-map head reads the last of what it is given, so one input
    is the whole story). ``groups`` says how the inputs nest when the head
    reads a tuple of tuples (MSPN: ``(4, 4)`` for two stages of four units);
    None for a flat tuple. ``featuremap_size`` is an exact (width, height)
    grid the last input must have (RTMCCHead's ``in_featuremap_size``).
    ``heatmap_size`` and ``input_size`` are (width, height), as mmpose's
    codecs write them. ``kept_neck`` names the stock neck that stays after
    the adapter (GlobalAveragePooling before a regression head).
    """

    inputs: tuple[InputSpec, ...]
    groups: tuple[int, ...] | None = None
    head_type: str | None = None
    num_keypoints: int | None = None
    heatmap_size: tuple[int, int] | None = None
    input_size: tuple[int, int] | None = None
    featuremap_size: tuple[int, int] | None = None
    head_upsample: float = 1  # the head's own upsampling of the map it reads (deconvs)
    kept_neck: str | None = None
    source: str = "spec"  # where it came from: "spec", a config path, a head type
    config: str | None = None  # the config it was read from, when any

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, tuple) or not self.inputs:
            raise TargetError(f"a head reads at least one map, got inputs={self.inputs!r}")
        if not all(isinstance(i, InputSpec) for i in self.inputs):
            raise TargetError("target inputs must be InputSpec records")
        if self.groups is not None and (
            any(isinstance(g, bool) or not isinstance(g, int) or g <= 0 for g in self.groups)
            or sum(self.groups) != len(self.inputs)
        ):
            raise TargetError(f"groups {self.groups} do not split the {len(self.inputs)} inputs")

    @classmethod
    def single(cls, channels: int, stride: Stride | None, layout: Layout = Layout.NCHW, **facts: object) -> TargetSpec:
        """A head that reads one map."""
        return cls(inputs=(InputSpec(channels=channels, stride=stride, layout=layout),), **facts)  # type: ignore[arg-type]

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def last(self) -> InputSpec:
        """The map a single-map head reads (mmpose heads read ``feats[-1]``)."""
        return self.inputs[-1]

    @property
    def channels(self) -> int:
        return self.last.channels

    @property
    def stride(self) -> Stride | None:
        return self.last.stride

    @property
    def layout(self) -> Layout:
        return self.last.layout


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
class InputPlan:
    """How one head input is made: the backbone feature it comes from and the steps."""

    index: int  # which of the target's inputs
    feature: FeatureSpec
    input: InputSpec
    steps: tuple[PlanStep, ...]
    reason: str  # why this feature was chosen, in words
    merged: tuple[InputPlan, ...]  # further scales merged into this map (after the MERGE step); () for one feature
    merge: MergeRule | None  # how ``merged`` joins; None for one feature

    @property
    def out_channels(self) -> int:
        return self.steps[-1].out_shape[1] if self.steps else self.feature.channels

    @property
    def features(self) -> tuple[FeatureSpec, ...]:
        """Every backbone feature this input reads, finest first."""
        return (self.feature, *(m.feature for m in self.merged))

    @property
    def all_steps(self) -> tuple[PlanStep, ...]:
        """This chain's steps, each merged branch's, then the merge (the order the plan table shows)."""
        if not self.merged:
            return self.steps
        return (*self.steps[:-1], *(s for m in self.merged for s in m.steps), self.steps[-1])


@dataclass(frozen=True)
class AdapterPlan:
    """One InputPlan per head input, in the head's order, and the strategy."""

    target: TargetSpec
    strategy: Strategy
    inputs: tuple[InputPlan, ...]
    input_shape: tuple[int, ...]
    uses: float | None  # share of the backbone's trainable parameters the read features depend on; None: unknown

    @property
    def last(self) -> InputPlan:
        """The plan of the map a single-map head reads."""
        return self.inputs[-1]

    @property
    def feature(self) -> FeatureSpec:
        return self.last.feature

    @property
    def steps(self) -> tuple[PlanStep, ...]:
        return self.last.steps

    @property
    def reason(self) -> str:
        return self.last.reason

    @property
    def out_channels(self) -> int:
        return self.last.out_channels

    @property
    def macs(self) -> int:
        return sum(s.macs for p in self.inputs for s in p.all_steps)

    @property
    def params(self) -> int:
        return sum(s.params for p in self.inputs for s in p.all_steps)

    @property
    def paths(self) -> tuple[str, ...]:
        """Every backbone output the adapter reads, once each, in the head's order."""
        return tuple(dict.fromkeys(f.path for p in self.inputs for f in p.features))
