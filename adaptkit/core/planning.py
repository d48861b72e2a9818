"""Plan the adapter: pick the feature(s) (``core.choosing``), then the cheapest exact chain of steps.

Pure functions over records (ProbeResult, TargetSpec) -> AdapterPlan. The
chain is select -> layout fix -> {1x1 projection, bilinear resize} with the
projection placed on the side of the resize where it costs less: a 1x1
conv and a bilinear resize commute exactly (bias included, since bilinear
weights sum to 1), so the order changes only the cost. Several scales
merged into one map each take that chain to the head's grid, then a sum
(or a concat and a 1x1 conv).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from adaptkit.core.choosing import MIN_SHARE, assign_features, choose_feature, choose_scales, fused_refusal
from adaptkit.core.layouts import layout_info
from adaptkit.core.plan_json import plan_from_dict, plan_to_dict
from adaptkit.core.reach import ParameterReach
from adaptkit.core.records import (
    AdapterPlan,
    FeaturePolicy,
    FeatureSpec,
    InputPlan,
    InputSpec,
    Layout,
    MergeRule,
    PlanStep,
    ProbeResult,
    StepKind,
    Strategy,
    TargetSpec,
)
from adaptkit.core.shapes import target_size
from adaptkit.core.units import format_count, format_stride
from adaptkit.errors import PlanError

# choose_feature, MIN_SHARE and the JSON pair live beside the planner; re-exported where callers look
__all__ = ["plan_features", "choose_feature", "MIN_SHARE", "plan_to_dict", "plan_from_dict"]

_FLOAT_BYTES = 4
_BILINEAR_MACS = 4  # four taps per output element


def _shape_nchw(batch: int, channels: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    return (batch, channels, hw[0], hw[1])


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _project_step(shape: tuple[int, ...], out_channels: int, why: str) -> PlanStep:
    b, c, h, w = shape
    out = (b, out_channels, h, w)
    return PlanStep(
        kind=StepKind.PROJECT,
        in_shape=shape,
        out_shape=out,
        macs=b * h * w * c * out_channels,
        bytes=_numel(out) * _FLOAT_BYTES,
        params=c * out_channels + out_channels,
        args=(("in_channels", c), ("out_channels", out_channels)),
        why=why,
    )


def _resize_step(shape: tuple[int, ...], size: tuple[int, int], why: str) -> PlanStep:
    b, c, _, _ = shape
    out = (b, c, size[0], size[1])
    return PlanStep(
        kind=StepKind.RESIZE,
        in_shape=shape,
        out_shape=out,
        macs=_numel(out) * _BILINEAR_MACS,
        bytes=_numel(out) * _FLOAT_BYTES,
        params=0,
        args=(("size", size), ("mode", "bilinear"), ("align_corners", False)),
        why=why,
    )


def plan_features(
    result: ProbeResult,
    target: TargetSpec,
    select: str | None = None,
    strategy: Strategy = Strategy.ADAPT_FEATURES,
    policy: FeaturePolicy = FeaturePolicy.AUTO,
    merge: MergeRule = MergeRule.SUM,
    reach: ParameterReach | None = None,
) -> AdapterPlan:
    """One minimal chain per head input, each from its assigned feature(s), cheapest order first.

    ``reach`` (what each output depends on, from ``core.reach``) lets the
    planner see how much of the backbone a choice uses; without it AUTO
    means CLOSEST and the plan's ``uses`` is None. Several comma-separated
    ``select`` paths for a head that reads one map, or ``policy`` FUSED,
    merge several scales into that map by ``merge``.
    """
    for spec in target.inputs:
        if spec.layout is not Layout.NCHW:
            raise PlanError(
                f"the target reads a {spec.layout.value} feature; adaptkit adapts to NCHW maps (what mmpose heads read)"
            )
    if strategy is Strategy.ADAPT_HEAD and target.num_inputs > 1:
        raise PlanError(
            f"adapt-head changes one in_channels, but the head reads {target.num_inputs} maps; use adapt-features"
        )
    known = {f.path for f in result.features}
    if reach is not None and not known <= set(reach.reached):
        reach = None  # traced for other paths: say nothing rather than guess
    scales = choose_scales(result, target, select, policy, reach)
    if scales is not None:
        inputs: tuple[InputPlan, ...] = (_plan_fused(result, target, scales, strategy, merge),)
    else:
        if policy is FeaturePolicy.FUSED:
            raise PlanError(fused_refusal(target))
        chosen = assign_features(result, target, select, policy if target.num_inputs == 1 else None, reach)
        inputs = tuple(
            _plan_input(
                result, index, feature, reason, spec, strategy, target.featuremap_size if spec is target.last else None
            )
            for index, ((feature, reason), spec) in enumerate(zip(chosen, target.inputs, strict=True))
        )
    paths = dict.fromkeys(f.path for p in inputs for f in p.features)
    return AdapterPlan(
        target=target,
        strategy=strategy,
        inputs=inputs,
        input_shape=tuple(result.input_shape),
        uses=reach.share(paths) if reach is not None else None,
    )


def _plan_fused(
    result: ProbeResult,
    target: TargetSpec,
    scales: tuple[tuple[FeatureSpec, ...], str],
    strategy: Strategy,
    merge: MergeRule,
) -> InputPlan:
    """Each scale projected to the head's channels and resized to its grid, then merged into one map."""
    features, reason = scales
    if strategy is Strategy.ADAPT_HEAD:
        raise PlanError(
            "merging scales needs one channel count, and adapt-head keeps each feature's own; use adapt-features"
        )
    spec, grid = target.last, target.featuremap_size
    branches = [
        _plan_input(result, 0, f, reason if i == 0 else f"merged into input 0 ({reason})", spec, strategy, grid)
        for i, f in enumerate(features)
    ]
    anchor, rest = branches[0], tuple(branches[1:])
    out = anchor.steps[-1].out_shape
    b, c, h, w = out
    n = len(branches)
    if merge is MergeRule.SUM:
        step = PlanStep(
            kind=StepKind.MERGE,
            in_shape=out,
            out_shape=out,
            macs=(n - 1) * _numel(out),
            bytes=_numel(out) * _FLOAT_BYTES,
            params=0,
            args=(("rule", merge.value), ("maps", n)),
            why=f"sum of the {n} maps ({c} ch at {h}x{w} each)",
        )
    else:
        step = PlanStep(
            kind=StepKind.MERGE,
            in_shape=(b, n * c, h, w),
            out_shape=out,
            macs=b * h * w * n * c * c,
            bytes=_numel(out) * _FLOAT_BYTES,
            params=n * c * c + c,
            args=(("rule", merge.value), ("maps", n)),
            why=f"concatenate the {n} maps ({n * c} ch) and 1x1 conv back to {c} ch",
        )
    return replace(anchor, steps=(*anchor.steps, step), merged=rest, merge=merge)


def _plan_input(
    result: ProbeResult,
    index: int,
    feature: FeatureSpec,
    reason: str,
    spec: InputSpec,
    strategy: Strategy,
    grid: tuple[int, int] | None,
) -> InputPlan:
    """The chain select -> layout -> {project, resize} for one head input."""
    if feature.spatial is None:  # choose_feature keeps spatial features only
        raise PlanError(f"feature {feature.path!r} is not a spatial map")
    batch = result.input_shape[0]
    steps: list[PlanStep] = [
        PlanStep(
            kind=StepKind.SELECT,
            in_shape=feature.shape,
            out_shape=feature.shape,
            macs=0,
            bytes=0,
            params=0,
            args=(("path", feature.path),),
            why=reason,
        )
    ]
    shape = _shape_nchw(batch, feature.channels, feature.spatial)
    row = layout_info(feature.layout)
    if row.layout_step is not None:
        what = row.layout_step
        if row.needs_grid:
            what += f" ({feature.prefix_tokens} prefix token(s) dropped)"
        steps.append(
            PlanStep(
                kind=StepKind.LAYOUT,
                in_shape=feature.shape,
                out_shape=shape,
                macs=0,
                bytes=_numel(shape) * _FLOAT_BYTES,
                params=0,
                args=(
                    ("layout", feature.layout.value),
                    ("prefix_tokens", feature.prefix_tokens),
                    ("grid", feature.spatial),
                ),
                why=f"rearrange {what}",
            )
        )

    out_channels = spec.channels if strategy is Strategy.ADAPT_FEATURES else feature.channels
    input_hw = (result.input_shape[2], result.input_shape[3])
    target_stride = spec.stride if spec.stride is not None else feature.stride
    size = target_size(feature.spatial, feature.stride, target_stride, input_hw)
    if grid is not None and spec.stride is not None:
        want = (grid[1], grid[0])  # (width, height) -> (height, width)
        if size != want:
            raise PlanError(
                f"the head needs exactly a {grid[0]}x{grid[1]} (width x height) map, but at input "
                f"{input_hw[1]}x{input_hw[0]} stride {format_stride(target_stride)} gives {size[1]}x{size[0]}; "
                "probe at the config's input size"
            )
    needs_project = out_channels != feature.channels
    needs_resize = size != feature.spatial
    project_why = f"1x1 conv {feature.channels} -> {out_channels} channels (the head's in_channels)"
    resize_why = f"bilinear {feature.spatial[0]}x{feature.spatial[1]} -> {size[0]}x{size[1]} (stride {format_stride(feature.stride)} -> {format_stride(target_stride)})"
    if needs_project and needs_resize:
        a1 = _project_step(shape, out_channels, project_why)
        a2 = _resize_step(a1.out_shape, size, resize_why)
        b1 = _resize_step(shape, size, resize_why)
        b2 = _project_step(b1.out_shape, out_channels, project_why)
        cost_a, cost_b = a1.macs + a2.macs, b1.macs + b2.macs
        project_first = cost_a <= cost_b
        chosen = a1 if project_first else b2
        projected_at, other = (feature.spatial, size) if project_first else (size, feature.spatial)
        where = "lower" if _numel(projected_at) <= _numel(other) else "higher"
        cheaper = replace(
            chosen,
            why=f"{project_why}, at the {where} resolution ({format_count(min(cost_a, cost_b))} MACs vs {format_count(max(cost_a, cost_b))} the other way)",
        )
        steps.extend([cheaper, a2] if project_first else [b1, cheaper])
    elif needs_project:
        steps.append(_project_step(shape, out_channels, project_why))
    elif needs_resize:
        steps.append(_resize_step(shape, size, resize_why))
    return InputPlan(index=index, feature=feature, input=spec, steps=tuple(steps), reason=reason, merged=(), merge=None)
