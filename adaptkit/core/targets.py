"""What a head consumes, as a ``TargetSpec``, from the forms that need no OpenMMLab.

A spec string (``32@4``, ``32@4,64@8``) or a dict. Reading a config or a head is
OpenMMLab integration and lives in ``adaptkit.mm.targets``;
``adaptkit.parse_target`` dispatches between the two.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from adaptkit.core.records import InputSpec, Layout, TargetSpec, parse_enum
from adaptkit.core.shapes import check_channels, check_stride, short_repr
from adaptkit.errors import TargetError

__all__ = [
    "SPEC_INPUT_DEFAULT",
    "parse_spec_target",
    "is_spec",
    "target_from_spec",
    "target_from_dict",
    "exact",
    "probe_shape",
]

_NUMBER = r"\d+(?:\.\d+)?"
_SPEC = re.compile(rf"^\s*(\d+)\s*@\s*({_NUMBER})(?:\s*[x,]\s*({_NUMBER}))?\s*$")
#: the stride of a heatmap relative to the input when nothing says otherwise (mmpose's codecs use 4)
DEFAULT_HEATMAP_STRIDE = 4
#: the probe shape for a bare CHANNELS@STRIDE target, which has no input size of its own (plan and wrap share it)
SPEC_INPUT_DEFAULT = "2x3x640x640"


def exact(value: float) -> float:
    """An int when ``value`` is whole (strides print as 4, not 4.0)."""
    return int(round(value)) if abs(value - round(value)) < 1e-9 else float(value)


def probe_shape(target: TargetSpec, input_shape: Any = None, batch: int = 1) -> Any:
    """``input_shape`` when given, else ``batch`` x 3 x the codec's input size; PlanError when neither exists."""
    if input_shape is not None:
        return input_shape
    if target.input_size is None:
        from adaptkit.errors import PlanError

        raise PlanError("no input shape: pass input_shape (e.g. (2, 3, 256, 192)) or a config target with a codec")
    width, height = target.input_size
    return (batch, 3, height, width)


_SPLIT = re.compile(r",(?=\s*\d+\s*@)")  # a comma that starts the next CHANNELS@STRIDE


def is_spec(text: str) -> bool:
    """Whether ``text`` is written as CHANNELS@STRIDE, or several of them separated by commas."""
    return all(_SPEC.match(part) for part in _SPLIT.split(text.strip()))


def parse_spec_target(target: Any) -> TargetSpec:
    """A TargetSpec, a ``CHANNELS@STRIDE[,...]`` string or a plain dict -> TargetSpec; TargetError otherwise."""
    if isinstance(target, TargetSpec):
        return target
    if isinstance(target, Mapping) and "type" not in target:
        return target_from_dict(target)
    if isinstance(target, str) and is_spec(target):
        return target_from_spec(target.strip())
    raise TargetError(
        f"cannot read target {short_repr(target)}; write CHANNELS@STRIDE (e.g. 32@4, or 32@4,64@8 for a head that reads "
        "two maps), a config file, or mmpose::path/to/config.py"
    )


def _input_from_spec(text: str, whole: str) -> InputSpec:
    match = _SPEC.match(text)
    if not match:
        raise TargetError(f"target spec {short_repr(whole)} is not CHANNELS@STRIDE, e.g. 32@4 or 32@4,64@8")
    prefix = f"target spec {short_repr(whole)}: "
    channels = check_channels(_number(match.group(1), int), TargetError, prefix)
    sh = check_stride(_number(match.group(2), float), TargetError, prefix)
    sw = check_stride(_number(match.group(3), float), TargetError, prefix) if match.group(3) else sh
    try:
        return InputSpec(channels=channels, stride=(sh, sw), layout=Layout.NCHW)
    except ValueError as exc:
        raise TargetError(f"{prefix}{exc}") from None


def _number(text: str, kind: type) -> int | float:
    """A spec's digits as a number; a huge one as inf (never a 5000-digit int, which str() refuses)."""
    whole = text.split(".")[0].lstrip("0")
    if len(whole) > 18:
        return math.inf if kind is float else 1 << 64
    return kind(text)  # type: ignore[no-any-return]


def target_from_spec(text: str) -> TargetSpec:
    """``"32@4"`` (32 channels at stride 4), ``"32@4x8"`` (stride 4 in height, 8 in width),
    ``"32@4,64@8"`` (a head that reads two maps, in that order)."""
    inputs = tuple(_input_from_spec(part.strip(), text) for part in _SPLIT.split(text))
    return TargetSpec(inputs=inputs, source=text)


def _stride(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise TargetError(
            f"cannot read target: stride must be a number or (height, width), got the string {short_repr(value)}"
        )
    if not isinstance(value, (list, tuple)):
        one = check_stride(value, TargetError)
        return (one, one)
    return tuple(check_stride(s, TargetError) for s in value)


def _input_from_dict(data: Mapping[str, Any]) -> InputSpec:
    known = {f.name for f in fields(InputSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown input field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
    if "channels" not in data or "stride" not in data:
        raise ValueError("an input needs its channels and its stride (None: the head pools it)")
    return InputSpec(
        channels=check_channels(data["channels"], TargetError),
        stride=_stride(data.get("stride")),
        layout=parse_enum(Layout, data.get("layout", "NCHW"), "layout"),
    )


def target_from_dict(data: Mapping[str, Any]) -> TargetSpec:
    """``{"channels": 32, "stride": 4, ...}`` for one map, or ``{"inputs": [{...}, ...], ...}`` for several."""
    per_input = {f.name for f in fields(InputSpec)}
    known = {f.name for f in fields(TargetSpec)} | per_input
    unknown = sorted(set(data) - known)
    if unknown:
        raise TargetError(f"unknown target field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
    values = {k: v for k, v in data.items() if k not in per_input}
    try:
        if "inputs" in values:
            if per_input & set(data):
                raise ValueError("give either inputs or channels/stride/layout, not both")
            raw = values["inputs"]
            if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)):
                raise ValueError(f"inputs must be a list of dicts, got {short_repr(raw)}")
            values["inputs"] = tuple(i if isinstance(i, InputSpec) else _input_from_dict(i) for i in raw)
        else:
            values["inputs"] = (_input_from_dict({k: data[k] for k in per_input if k in data}),)
        for key in ("heatmap_size", "input_size", "featuremap_size", "groups"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return TargetSpec(**values)
    except TargetError:
        raise
    except (TypeError, ValueError) as exc:
        raise TargetError(f"cannot read target {short_repr(dict(data))}: {exc}") from None
