"""Choose the backbone feature(s) each head input reads.

Pure functions over a ProbeResult, the target and, when known, what each
output depends on (``core.reach``). The nearest stride is the cheapest
choice and often the worst one: ResNet-50's stride-4 map fits an HRNet
head exactly yet depends on 1 % of the weights. So the planner also weighs
how much of the backbone a choice uses, and can merge every coarser scale
into the head's one map (``FeaturePolicy``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from adaptkit.core.reach import ParameterReach
from adaptkit.core.records import AdapterPlan, FeaturePolicy, FeatureSpec, InputSpec, ProbeResult, Stride, TargetSpec
from adaptkit.core.units import format_stride
from adaptkit.errors import PlanError

__all__ = [
    "MIN_SHARE",
    "assign_features",
    "candidates",
    "choose_feature",
    "choose_scales",
    "fused_refusal",
    "scale_ladder",
    "usage_warning",
]

#: below this share of the backbone's parameters behind the read features, the plan warns (and AUTO merges scales)
MIN_SHARE = 0.5


def _log_distance(feature: FeatureSpec, stride: Stride) -> float:
    return sum(abs(math.log2(f / t)) for f, t in zip(feature.stride, stride, strict=True)) / 2


def candidates(result: ProbeResult) -> list[FeatureSpec]:
    """The features a head input may come from: real floating maps, never the input passthrough or a repeat."""
    return [f for f in result.features if f.is_spatial and not f.is_input and f.alias_of is None and _real_floating(f)]


def _real_floating(feature: FeatureSpec) -> bool:
    """float16/32/64 or bfloat16: what a 1x1 conv and a bilinear resize take (not int64, bool or complex)."""
    return feature.dtype.startswith(("float", "bfloat"))


def _selected(result: ProbeResult, select: str) -> FeatureSpec:
    try:
        feature = result.feature(select)
    except KeyError as exc:
        raise PlanError(str(exc.args[0])) from None
    if feature.is_input:
        raise PlanError(f"--select {select!r} names the input image passed through, not a feature; pick another path")
    if not feature.is_spatial:
        raise PlanError(
            f"--select {select!r} is a {feature.layout.value} tensor of shape {list(feature.shape)}, not a feature map"
        )
    if not _real_floating(feature):
        raise PlanError(
            f"--select {select!r} is a {feature.dtype} tensor; an adapter's convolution and resize need "
            "real floating-point features"
        )
    return feature


def choose_feature(
    result: ProbeResult,
    target: TargetSpec | InputSpec,
    select: str | None = None,
    taken: Mapping[str, int] | None = None,
    reach: ParameterReach | None = None,
) -> tuple[FeatureSpec, str]:
    """The feature to adapt for one head input (a TargetSpec means its last input), and why, in words.

    The user's ``select`` wins. Otherwise: the stride closest to the
    input's (least resizing, least lost detail), then the most channels
    (the richest feature; projecting is cheap), then the one that depends
    on more of the backbone (``reach``), then the feature fewest earlier
    inputs took (``taken``: path -> count; a multi-stage head gets
    each stage's own maps), then the earliest path. An input the head pools
    (stride None) takes the deepest feature. Never the input passthrough,
    never a repeat of an earlier output.
    """
    wanted = target.last if isinstance(target, TargetSpec) else target
    if select is not None:
        return _selected(result, select), f"selected by the user ({select!r})"
    maps = candidates(result)
    if not maps:
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
    order = {f.path: i for i, f in enumerate(result.features)}
    used = taken or {}
    if wanted.stride is None:
        best = min(maps, key=lambda f: (-round(math.log2(max(f.stride)), 6), -f.channels, order[f.path]))
        return best, (
            f"the head pools its map to a vector, so any stride serves: the deepest feature (stride "
            f"{format_stride(best.stride)}, {best.channels} ch), no resize"
        )
    stride = wanted.stride
    best = min(
        maps,
        key=lambda f: (
            round(_log_distance(f, stride), 6),
            -f.channels,
            -round(_share(reach, f), 6),
            used.get(f.path, 0),
            order[f.path],
        ),
    )
    return best, _explain_choice(best, [f for f in maps if not used.get(f.path)] or maps, stride)


def assign_features(
    result: ProbeResult,
    target: TargetSpec,
    select: str | None = None,
    policy: FeaturePolicy | None = None,
    reach: ParameterReach | None = None,
) -> tuple[tuple[FeatureSpec, str], ...]:
    """One (feature, why) per head input, in the head's order.

    ``select`` is one path (used for every input) or one path per input,
    comma-separated. Without it each input takes the feature closest to its
    stride, so a backbone with fewer maps than the head reads feeds several
    inputs from one feature. ``policy`` DEEPEST (a one-map head) takes the
    feature that depends on the most of the backbone instead.
    """
    paths: list[str | None] = [None] * target.num_inputs
    if select is not None:
        parts = [p.strip() for p in select.split(",")] if "," in select else [select]
        if len(parts) == 1:
            paths = [parts[0]] * target.num_inputs
        elif len(parts) == target.num_inputs:
            paths = list(parts)
        else:
            raise PlanError(
                f"--select names {len(parts)} paths but the head reads {target.num_inputs} maps; "
                "give one path, or one per map"
            )
    if policy is FeaturePolicy.DEEPEST and select is None and target.stride is not None:
        return (_deepest(result, reach),)
    taken: dict[str, int] = {}
    chosen = []
    for spec, path in zip(target.inputs, paths, strict=True):
        feature, reason = choose_feature(result, spec, path, taken, reach)
        taken[feature.path] = taken.get(feature.path, 0) + 1
        chosen.append((feature, reason))
    if target.num_inputs > 1:
        first: dict[str, int] = {}
        for i, (feature, reason) in enumerate(chosen):
            if feature.path in first:
                chosen[i] = (feature, f"{reason}; shared with input {first[feature.path]}")
            else:
                first[feature.path] = i
    return tuple(chosen)


def _deepest(result: ProbeResult, reach: ParameterReach | None) -> tuple[FeatureSpec, str]:
    """The feature behind the most of the backbone's parameters; without ``reach``, the coarsest stride."""
    maps = candidates(result)
    if not maps:
        return choose_feature(result, TargetSpec.single(1, None))  # raises the no-feature error
    order = {f.path: i for i, f in enumerate(result.features)}
    best = min(maps, key=lambda f: (-round(_share(reach, f), 6), -_level(f), -f.channels, order[f.path]))
    if reach is None:
        return best, f"--policy deepest: the coarsest feature (stride {format_stride(best.stride)})"
    return best, (
        f"--policy deepest: it depends on the most of the backbone ({_percent(_share(reach, best))} of its parameters)"
    )


def _explain_choice(best: FeatureSpec, maps: list[FeatureSpec], stride: Stride) -> str:
    same = [f for f in maps if f.stride == best.stride and f is not best]
    words = f"stride {format_stride(best.stride)} is the closest to the target's {format_stride(stride)}"
    if best.stride == stride:
        words = f"stride {format_stride(best.stride)} matches the target's exactly"
    fewer = [f for f in same if f.channels < best.channels]
    ties = [f for f in same if f.channels == best.channels]
    if fewer:
        others = ", ".join(f"{f.channels} at {f.path!r}" for f in fewer)
        words += f"; among features at that stride it has the most channels ({best.channels} vs {others})"
    if ties:
        words += f"; it comes before {', '.join(repr(f.path) for f in ties)} with as many channels"
    return words


def usage_warning(plan: AdapterPlan) -> str | None:
    """One line when the read features leave most of the backbone untrained; None otherwise (or unknown)."""
    if plan.uses is None or plan.uses >= MIN_SHARE:
        return None
    paths = ", ".join(repr(p) for p in plan.paths)
    return (
        f"{paths} depend(s) on only {_percent(plan.uses)} of the backbone's parameters: the rest never reaches the "
        "head and will not train; use --policy fused (or auto), or --select deeper features"
    )


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%" if share < 0.1 else f"{100 * share:.0f}%"


def fused_refusal(target: TargetSpec) -> str:
    if target.num_inputs > 1:
        return (
            f"merging scales makes one map, but the head reads {target.num_inputs} maps; "
            "drop --policy fused (each map takes its own feature) or give one --select path per map"
        )
    return "the head pools its map to a vector, so there is no grid to merge scales on; drop --policy fused"


def choose_scales(
    result: ProbeResult, target: TargetSpec, select: str | None, policy: FeaturePolicy, reach: ParameterReach | None
) -> tuple[tuple[FeatureSpec, ...], str] | None:
    """The features to merge into a one-map head's input, and why; None when one feature serves."""
    if target.num_inputs != 1 or target.stride is None:
        return None
    if select is not None:
        parts = [p.strip() for p in select.split(",")]
        if len(parts) == 1:
            return None
        if len(set(parts)) != len(parts):
            raise PlanError(f"--select names a path twice ({select!r}); name each feature to merge once")
        features = tuple(_selected(result, p) for p in parts)
        return tuple(sorted(features, key=lambda f: max(f.stride))), f"selected by the user ({select!r}), merged"
    if policy not in (FeaturePolicy.FUSED, FeaturePolicy.AUTO):
        return None
    closest, _ = choose_feature(result, target, reach=reach)
    ladder = scale_ladder(result, closest, reach)
    if policy is FeaturePolicy.AUTO:
        if reach is None or reach.share([closest.path]) >= MIN_SHARE or len(ladder) == 1:
            return None
        why = (
            f"the closest feature {closest.path!r} alone depends on {_percent(reach.share([closest.path]))} of the "
            f"backbone's parameters (under {_percent(MIN_SHARE)}), so every coarser scale is merged in"
        )
    else:
        if len(ladder) == 1:
            raise PlanError(
                f"--policy fused needs features at several strides, but only {closest.path!r} serves this head; "
                "use --policy closest"
            )
        why = "--policy fused: the closest feature and one per coarser stride"
    names = ", ".join(f"{f.path!r} (stride {format_stride(f.stride)})" for f in ladder)
    used = f"; together they use {_percent(reach.share(f.path for f in ladder))}" if reach is not None else ""
    return ladder, f"{why}: {names}{used}"


def scale_ladder(
    result: ProbeResult, closest: FeatureSpec, reach: ParameterReach | None = None
) -> tuple[FeatureSpec, ...]:
    """``closest`` and, for each coarser stride the backbone returns, the feature there that uses the most of it.

    A pyramid (ResNet's c2..c5) gives all its levels from the one nearest
    the target's stride down; ties go to more channels, then the earlier path.
    """
    order = {f.path: i for i, f in enumerate(result.features)}
    levels: dict[int, list[FeatureSpec]] = {}
    for f in candidates(result):
        levels.setdefault(_level(f), []).append(f)
    ladder = [closest]
    for level in sorted(k for k in levels if k > _level(closest)):
        ladder.append(min(levels[level], key=lambda f: (-_share(reach, f), -f.channels, order[f.path])))
    return tuple(ladder)


def _level(feature: FeatureSpec) -> int:
    return round(math.log2(max(feature.stride)))


def _share(reach: ParameterReach | None, feature: FeatureSpec) -> float:
    return reach.share([feature.path]) if reach is not None else 0.0
