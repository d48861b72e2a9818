"""Build stage: an AdapterPlan -> the adapter module, or the config dict that builds it."""

from __future__ import annotations

from typing import Any

from adaptkit.core.adapter import ShapeAdapter
from adaptkit.core.layouts import layout_info
from adaptkit.core.records import AdapterPlan, StepKind
from adaptkit.errors import BuildError

__all__ = ["adapter_config", "build_adapter"]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def adapter_config(plan: AdapterPlan) -> dict[str, Any]:
    """The ``neck`` config dict (type ``ShapeAdapter``) that rebuilds this plan's adapter."""
    kinds = [step.kind for step in plan.steps]
    feature = plan.feature
    if feature.spatial is None:
        raise BuildError(f"feature {feature.path!r} is not a spatial map; re-plan with another --select")
    project_first = True
    if StepKind.PROJECT in kinds and StepKind.RESIZE in kinds:
        project_first = kinds.index(StepKind.PROJECT) < kinds.index(StepKind.RESIZE)
    cfg: dict[str, Any] = dict(
        type="ShapeAdapter",
        select=feature.path,
        layout=feature.layout.value,
        in_channels=feature.channels,
        out_channels=plan.out_channels,
        feature_stride=_plain(feature.stride),
        target_stride=_plain(plan.target.stride),
        project_first=project_first,
    )
    if layout_info(feature.layout).needs_grid:
        cfg.update(prefix_tokens=feature.prefix_tokens, grid=list(feature.spatial))
    return cfg


def build_adapter(plan: AdapterPlan) -> ShapeAdapter:
    """A fresh ShapeAdapter for ``plan`` (projection initialised, no weights loaded)."""
    cfg = adapter_config(plan)
    cfg.pop("type")
    return ShapeAdapter(**cfg)
