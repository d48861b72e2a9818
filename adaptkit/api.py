"""The public front doors: each takes what a user holds (a SOURCE string, a config, a module)
and hands records to the core stages.

``adaptkit.plan`` and ``adaptkit.wrap`` resolve their arguments here, so the
core (``adaptkit.core``) only ever sees modules, ``ProbeResult`` and
``TargetSpec`` records, and never imports OpenMMLab.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import torch.nn as nn

from adaptkit.core.planning import plan_features
from adaptkit.core.probing import probe
from adaptkit.core.reach import ParameterReach, probe_reach
from adaptkit.core.records import (
    AdapterPlan,
    FeaturePolicy,
    MergeRule,
    ProbeResult,
    Strategy,
    TargetSpec,
    parse_enum,
)
from adaptkit.core.targets import probe_shape
from adaptkit.core.wrapping import WrappedBackbone, wrap_module
from adaptkit.errors import PlanError, SourceError, TargetError

__all__ = ["parse_target", "plan", "wrap", "DEFAULT_PROBE_BATCH", "TargetLike", "SourceLike", "ShapeLike"]

#: what a target may be given as: a record, "CHANNELS@STRIDE", a config path or ``mmpose::`` name, a dict, a head
TargetLike: TypeAlias = TargetSpec | str | Mapping[str, Any] | nn.Module
#: a backbone, or a SOURCE string (zoo name, ``module:callable``, ``file.py:Name``, ``timm:NAME``)
SourceLike: TypeAlias = nn.Module | str
#: an input shape: ``"2x3x256x192"`` or ``(2, 3, 256, 192)``
ShapeLike: TypeAlias = str | Sequence[int]

#: the batch every command probes at: train-mode BatchNorm on a globally pooled branch (SCTNet's DAPPM) needs 2
DEFAULT_PROBE_BATCH = 2


def parse_target(target: TargetLike, **options: Any) -> TargetSpec:
    """Any supported target form -> TargetSpec: a spec, a dict, a config path or name, a head.

    The one dispatcher: specs and dicts go to the core (``adaptkit.core.targets``),
    configs and heads to the OpenMMLab readers (``adaptkit.mm.targets``, imported
    only then). ``options`` reach the head tracer (``heatmap_stride``).
    """
    from adaptkit.core.targets import is_spec, parse_spec_target

    if isinstance(target, TargetSpec):
        return target
    if isinstance(target, nn.Module) or (isinstance(target, Mapping) and "type" in target):
        from adaptkit.mm.targets import target_from_head

        return target_from_head(target, **options)
    if isinstance(target, str) and not is_spec(target) and _is_config_target(target):
        from adaptkit.mm.targets import target_from_config

        return target_from_config(target.strip(), **options)
    if not isinstance(target, (str, Mapping)):
        raise TargetError(
            f"a target is a TargetSpec, a 'CHANNELS@STRIDE' string, a config path or a head; got {type(target).__name__}"
        )
    return parse_spec_target(target)  # a spec's own errors stand; they are not a config's


def _is_config_target(text: str) -> bool:
    """Whether a target string names a config (a ``.py`` file or an ``mmpose::`` name) rather than a spec."""
    stripped = text.strip()
    return stripped.endswith(".py") or "::" in stripped


def _strategy(strategy: str | Strategy) -> Strategy:
    try:
        return parse_enum(Strategy, strategy, "strategy")
    except ValueError as exc:
        raise PlanError(str(exc)) from None


def _choice(policy: str | FeaturePolicy, merge: str | MergeRule) -> tuple[FeaturePolicy, MergeRule]:
    try:
        return parse_enum(FeaturePolicy, policy, "feature policy"), parse_enum(MergeRule, merge, "merge rule")
    except ValueError as exc:
        raise PlanError(str(exc)) from None


def _model(source: SourceLike, source_kwargs: dict[str, Any]) -> nn.Module:
    from adaptkit.sources import resolve_source

    if not isinstance(source, str):
        if source_kwargs:
            raise SourceError(
                f"unknown keyword(s) {', '.join(sorted(source_kwargs))}: constructor keywords apply only to a SOURCE string"
            )
        return source
    return resolve_source(source, **source_kwargs)


def plan(
    source: SourceLike | ProbeResult,
    target: TargetLike,
    input_shape: ShapeLike | None = None,
    select: str | None = None,
    strategy: str | Strategy = Strategy.ADAPT_FEATURES,
    policy: str | FeaturePolicy = FeaturePolicy.AUTO,
    merge: str | MergeRule = MergeRule.SUM,
    reach: ParameterReach | None = None,
) -> AdapterPlan:
    """Plan an adapter from a backbone (or its ProbeResult) to a target.

    ``source`` is a ProbeResult, an nn.Module or a SOURCE string (probed at
    ``input_shape``, default the target's codec size at batch 2); ``target``
    anything ``parse_target`` reads. ``policy`` picks the feature(s) when
    ``select`` does not ("auto", "closest", "deepest", "fused"); ``merge``
    ("sum", "concat") joins several scales. A module or SOURCE is also
    traced for what each output depends on (``reach``); for a bare
    ProbeResult pass ``reach`` (``core.reach.probe_reach``) or the plan's
    ``uses`` stays unknown and "auto" means "closest".
    """
    chosen = _strategy(strategy)
    rule = _choice(policy, merge)
    spec = parse_target(target)
    if isinstance(source, ProbeResult):
        result = source
    else:
        model = _model(source, {})
        result = probe(model, probe_shape(spec, input_shape, batch=DEFAULT_PROBE_BATCH))
        reach = reach or probe_reach(model, result)
    return _warned(
        plan_features(result, spec, select=select, strategy=chosen, policy=rule[0], merge=rule[1], reach=reach)
    )


def wrap(
    backbone: SourceLike,
    target: TargetLike,
    input_shape: ShapeLike | None = None,
    select: str | None = None,
    strategy: str | Strategy = Strategy.ADAPT_FEATURES,
    policy: str | FeaturePolicy = FeaturePolicy.AUTO,
    merge: str | MergeRule = MergeRule.SUM,
    **source_kwargs: Any,
) -> WrappedBackbone:
    """Probe ``backbone``, plan the adapter to ``target`` and return both as one module.

    ``backbone`` is a module or a SOURCE string (built with ``source_kwargs``);
    ``target`` a TargetSpec, ``"CHANNELS@STRIDE"``, a config path or a head;
    ``input_shape`` the shape to probe at (default: the config's input size, batch 2);
    ``policy`` and ``merge`` as for ``plan``.
    Raises PlanError when no feature can serve the target.
    """
    chosen = _strategy(strategy)
    rule = _choice(policy, merge)
    model = _model(backbone, source_kwargs)
    spec = parse_target(target)
    result = probe(model, probe_shape(spec, input_shape, batch=DEFAULT_PROBE_BATCH))
    reach = probe_reach(model, result)
    adapter_plan = plan_features(
        result, spec, select=select, strategy=chosen, policy=rule[0], merge=rule[1], reach=reach
    )
    return wrap_module(model, _warned(adapter_plan))


def _warned(adapter_plan: AdapterPlan) -> AdapterPlan:
    """Warn (UnusedBackboneWarning) when the plan leaves most of the backbone untrained; the CLI prints its own line."""
    import warnings

    from adaptkit.core.choosing import usage_warning
    from adaptkit.errors import UnusedBackboneWarning

    message = usage_warning(adapter_plan)
    if message is not None:
        warnings.warn(message, UnusedBackboneWarning, stacklevel=3)
    return adapter_plan
