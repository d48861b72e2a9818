"""Plan the adapter: pick a feature, then the cheapest exact chain of steps.

Pure functions over records (ProbeResult, TargetSpec) -> AdapterPlan. The
chain is select -> layout fix -> {1x1 projection, bilinear resize} with the
projection placed on the side of the resize where it costs less: a 1x1
conv and a bilinear resize commute exactly (bias included, since bilinear
weights sum to 1), so the order changes only the cost.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from adaptkit.core.layouts import layout_info
from adaptkit.core.records import (
    AdapterPlan,
    FeatureSpec,
    Layout,
    PlanStep,
    ProbeResult,
    StepKind,
    Strategy,
    TargetSpec,
)
from adaptkit.core.shapes import target_size
from adaptkit.core.units import format_count, format_stride
from adaptkit.errors import PlanError

__all__ = ["plan_features", "choose_feature", "plan_to_dict", "plan_from_dict"]

_FLOAT_BYTES = 4
_BILINEAR_MACS = 4  # four taps per output element


def _log_distance(feature: FeatureSpec, target: TargetSpec) -> float:
    return sum(abs(math.log2(f / t)) for f, t in zip(feature.stride, target.stride, strict=True)) / 2


def choose_feature(result: ProbeResult, target: TargetSpec, select: str | None = None) -> tuple[FeatureSpec, str]:
    """The feature to adapt and why, in words.

    The user's ``select`` wins. Otherwise: the stride closest to the
    target's (least resizing, least lost detail), then the most channels
    (the richest feature; projecting is cheap), then the earliest path.
    Never the input passthrough, never a repeat of an earlier output.
    """
    if select is not None:
        try:
            feature = result.feature(select)
        except KeyError as exc:
            raise PlanError(str(exc.args[0])) from None
        if feature.is_input:
            raise PlanError(
                f"--select {select!r} names the input image passed through, not a feature; pick another path"
            )
        if not feature.is_spatial:
            raise PlanError(
                f"--select {select!r} is a {feature.layout.value} tensor of shape {list(feature.shape)}, not a feature map"
            )
        if not _real_floating(feature):
            raise PlanError(
                f"--select {select!r} is a {feature.dtype} tensor; an adapter's convolution and resize need "
                "real floating-point features"
            )
        return feature, f"selected by the user ({select!r})"

    candidates = [
        f for f in result.features if f.is_spatial and not f.is_input and f.alias_of is None and _real_floating(f)
    ]
    if not candidates:
        kinds = (
            ", ".join(
                f"{f.path or '<tensor>'} {list(f.shape)}" + ("" if _real_floating(f) else f" {f.dtype}")
                for f in result.features
            )
            or "nothing"
        )
        raise PlanError(
            f"the backbone returns no feature map adaptkit can adapt (it returns {kinds}); "
            "return an NCHW, NHWC or token (NLC) feature, e.g. with features_only=True"
        )
    if target.num_inputs > len(candidates):
        raise PlanError(
            f"the head reads {target.num_inputs} feature maps but the backbone returns only {len(candidates)}"
        )
    if target.num_inputs > 1:
        raise PlanError("the head reads several feature maps; adaptkit adapts heads that read one map (feats[-1])")

    order = {f.path: i for i, f in enumerate(result.features)}
    best = min(candidates, key=lambda f: (round(_log_distance(f, target), 6), -f.channels, order[f.path]))
    reason = _explain_choice(best, candidates, target)
    return best, reason


def _real_floating(feature: FeatureSpec) -> bool:
    """float16/32/64 or bfloat16: what a 1x1 conv and a bilinear resize take (not int64, bool or complex)."""
    return feature.dtype.startswith(("float", "bfloat"))


def _explain_choice(best: FeatureSpec, candidates: list[FeatureSpec], target: TargetSpec) -> str:
    same = [f for f in candidates if f.stride == best.stride and f is not best]
    words = f"stride {format_stride(best.stride)} is the closest to the target's {format_stride(target.stride)}"
    if best.stride == target.stride:
        words = f"stride {format_stride(best.stride)} matches the target's exactly"
    fewer = [f for f in same if f.channels < best.channels]
    ties = [f for f in same if f.channels == best.channels]
    if fewer:
        others = ", ".join(f"{f.channels} at {f.path!r}" for f in fewer)
        words += f"; among features at that stride it has the most channels ({best.channels} vs {others})"
    if ties:
        words += f"; it comes before {', '.join(repr(f.path) for f in ties)} with as many channels"
    return words


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
) -> AdapterPlan:
    """The minimal chain from one probed feature to the target, cheapest order first."""
    if target.layout is not Layout.NCHW:
        raise PlanError(
            f"the target reads a {target.layout.value} feature; adaptkit adapts to NCHW maps (what mmpose heads read)"
        )
    feature, reason = choose_feature(result, target, select)
    assert feature.spatial is not None  # choose_feature keeps spatial features only
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

    out_channels = target.channels if strategy is Strategy.ADAPT_FEATURES else feature.channels
    input_hw = (result.input_shape[2], result.input_shape[3])
    size = target_size(feature.spatial, feature.stride, target.stride, input_hw)
    needs_project = out_channels != feature.channels
    needs_resize = size != feature.spatial
    project_why = f"1x1 conv {feature.channels} -> {out_channels} channels (the head's in_channels)"
    resize_why = f"bilinear {feature.spatial[0]}x{feature.spatial[1]} -> {size[0]}x{size[1]} (stride {format_stride(feature.stride)} -> {format_stride(target.stride)})"
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
    return AdapterPlan(
        feature=feature,
        target=target,
        strategy=strategy,
        steps=tuple(steps),
        input_shape=tuple(result.input_shape),
        reason=reason,
    )


# -- serialisation: plain JSON-safe dicts, and back ---------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _record_to_dict(record: Any) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: _jsonable(getattr(record, f.name)) for f in fields(record)}


def plan_to_dict(adapter_plan: AdapterPlan) -> dict[str, Any]:
    """A JSON-safe dict that ``plan_from_dict`` turns back into the same plan."""
    return {
        "feature": _record_to_dict(adapter_plan.feature),
        "target": _record_to_dict(adapter_plan.target),
        "strategy": adapter_plan.strategy.value,
        "steps": [
            {**_record_to_dict(step), "args": {k: _jsonable(v) for k, v in step.args}} for step in adapter_plan.steps
        ],
        "input_shape": list(adapter_plan.input_shape),
        "reason": adapter_plan.reason,
        "macs": adapter_plan.macs,
        "params": adapter_plan.params,
    }


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


def plan_from_dict(data: Mapping[str, Any]) -> AdapterPlan:
    """Inverse of ``plan_to_dict``; PlanError when the dict is not a plan."""
    try:
        f = dict(data["feature"])
        feature = FeatureSpec(**{k: _tuple(v) for k, v in f.items() if k != "layout"}, layout=Layout(f["layout"]))
        t = dict(data["target"])
        target = TargetSpec(**{k: _tuple(v) for k, v in t.items() if k != "layout"}, layout=Layout(t["layout"]))
        steps = tuple(
            PlanStep(
                kind=StepKind(s["kind"]),
                in_shape=_tuple(s["in_shape"]),
                out_shape=_tuple(s["out_shape"]),
                macs=s["macs"],
                bytes=s["bytes"],
                params=s["params"],
                args=tuple((k, _tuple(v)) for k, v in s["args"].items()),
                why=s["why"],
            )
            for s in data["steps"]
        )
        return AdapterPlan(
            feature=feature,
            target=target,
            strategy=Strategy(data["strategy"]),
            steps=steps,
            input_shape=_tuple(data["input_shape"]),
            reason=data["reason"],
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanError(f"not an adapter plan: {type(exc).__name__}: {exc}") from None
