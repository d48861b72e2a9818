"""Build stage: an AdapterPlan -> the adapter module, or the config dict that builds it."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from adaptkit.core.adapter import build_adapter_module
from adaptkit.core.layouts import layout_info
from adaptkit.core.records import AdapterPlan, InputPlan, StepKind
from adaptkit.errors import BuildError

__all__ = ["adapter_config", "build_adapter"]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _branch_config(plan: InputPlan) -> dict[str, Any]:
    kinds = [step.kind for step in plan.steps]
    feature = plan.feature
    if feature.spatial is None:
        raise BuildError(f"feature {feature.path!r} is not a spatial map; re-plan with another --select")
    project_first = True
    if StepKind.PROJECT in kinds and StepKind.RESIZE in kinds:
        project_first = kinds.index(StepKind.PROJECT) < kinds.index(StepKind.RESIZE)
    stride = plan.input.stride if plan.input.stride is not None else feature.stride  # a pooled input: no resize
    cfg: dict[str, Any] = dict(
        type="ShapeAdapter",
        select=feature.path,
        layout=feature.layout.value,
        in_channels=feature.channels,
        out_channels=plan.out_channels,
        feature_stride=_plain(feature.stride),
        target_stride=_plain(stride),
        project_first=project_first,
    )
    if layout_info(feature.layout).needs_grid:
        cfg.update(prefix_tokens=feature.prefix_tokens, grid=list(feature.spatial))
    return cfg


def _input_config(plan: InputPlan) -> dict[str, Any]:
    """One head input: a ShapeAdapter, or a ScaleFusionAdapter when it merges several scales."""
    if not plan.merged:
        return _branch_config(plan)
    if plan.merge is None:
        raise BuildError(f"input {plan.index} merges {len(plan.merged) + 1} scales but names no merge rule")
    branches = []
    for branch_plan in (plan, *plan.merged):
        branch = _branch_config(branch_plan)
        branch.pop("type")
        branches.append(branch)
    return dict(type="ScaleFusionAdapter", branches=branches, out_channels=plan.out_channels, merge=plan.merge.value)


def adapter_config(plan: AdapterPlan) -> dict[str, Any]:
    """The ``neck`` config dict that rebuilds this plan's adapter.

    A ``ShapeAdapter`` when the head reads one map (a ``ScaleFusionAdapter``
    when that map merges several scales), else a ``MultiShapeAdapter`` with
    one branch per map.
    """
    if plan.target.num_inputs == 1 and plan.target.groups is None:
        return _input_config(plan.last)
    if any(p.merged for p in plan.inputs):
        raise BuildError("merged scales feed a head that reads one map; this plan's head reads several")
    branches = []
    for p in plan.inputs:
        branch = _branch_config(p)
        branch.pop("type")
        branches.append(branch)
    cfg: dict[str, Any] = dict(type="MultiShapeAdapter", branches=branches)
    if plan.target.groups is not None:
        cfg["groups"] = list(plan.target.groups)
    return cfg


def build_adapter(plan: AdapterPlan) -> nn.Module:
    """A fresh adapter for ``plan`` (projections initialised, no weights loaded)."""
    return build_adapter_module(adapter_config(plan))
