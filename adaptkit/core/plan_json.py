"""Plans as plain JSON-safe dicts, and back (``adaptkit plan --json``, saved plans)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from adaptkit.core.records import (
    AdapterPlan,
    FeatureSpec,
    InputPlan,
    InputSpec,
    Layout,
    MergeRule,
    PlanStep,
    StepKind,
    Strategy,
    TargetSpec,
)
from adaptkit.errors import PlanError

__all__ = ["plan_to_dict", "plan_from_dict"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _record_to_dict(record: Any) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: _jsonable(getattr(record, f.name)) for f in fields(record)}


def _target_to_dict(target: TargetSpec) -> dict[str, Any]:
    data = _record_to_dict(target)
    data["inputs"] = [_record_to_dict(i) for i in target.inputs]
    return data


def _input_to_dict(p: InputPlan) -> dict[str, Any]:
    return {
        "index": p.index,
        "feature": _record_to_dict(p.feature),
        "input": _record_to_dict(p.input),
        "steps": [{**_record_to_dict(step), "args": {k: _jsonable(v) for k, v in step.args}} for step in p.steps],
        "reason": p.reason,
        "merged": [_input_to_dict(m) for m in p.merged],
        "merge": p.merge.value if p.merge is not None else None,
    }


def plan_to_dict(adapter_plan: AdapterPlan) -> dict[str, Any]:
    """A JSON-safe dict that ``plan_from_dict`` turns back into the same plan."""
    return {
        "target": _target_to_dict(adapter_plan.target),
        "strategy": adapter_plan.strategy.value,
        "inputs": [_input_to_dict(p) for p in adapter_plan.inputs],
        "input_shape": list(adapter_plan.input_shape),
        "uses": adapter_plan.uses,
        "macs": adapter_plan.macs,
        "params": adapter_plan.params,
    }


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


def _input_spec(data: Mapping[str, Any]) -> InputSpec:
    return InputSpec(channels=data["channels"], stride=_tuple(data["stride"]), layout=Layout(data["layout"]))


def _input_from_dict(p: Mapping[str, Any]) -> InputPlan:
    f = dict(p["feature"])
    f.setdefault("module", None)  # plans written before features named their module
    feature = FeatureSpec(**{k: _tuple(v) for k, v in f.items() if k != "layout"}, layout=Layout(f["layout"]))
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
        for s in p["steps"]
    )
    merge = p.get("merge")  # plans written before scales could merge have neither key
    return InputPlan(
        index=p["index"],
        feature=feature,
        input=_input_spec(p["input"]),
        steps=steps,
        reason=p["reason"],
        merged=tuple(_input_from_dict(m) for m in p.get("merged", ())),
        merge=MergeRule(merge) if merge is not None else None,
    )


def plan_from_dict(data: Mapping[str, Any]) -> AdapterPlan:
    """Inverse of ``plan_to_dict``; PlanError when the dict is not a plan."""
    try:
        t = dict(data["target"])
        target = TargetSpec(
            **{k: _tuple(v) for k, v in t.items() if k != "inputs"},
            inputs=tuple(_input_spec(i) for i in t["inputs"]),
        )
        return AdapterPlan(
            target=target,
            strategy=Strategy(data["strategy"]),
            inputs=tuple(_input_from_dict(p) for p in data["inputs"]),
            input_shape=_tuple(data["input_shape"]),
            uses=data.get("uses"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanError(f"not an adapter plan: {type(exc).__name__}: {exc}") from None
