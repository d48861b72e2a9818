"""What a head consumes, as a ``TargetSpec``, from the forms that need no OpenMMLab.

A spec string (``32@4``) or a dict. Reading a config or a head is
OpenMMLab integration and lives in ``adaptkit.mm.targets``;
``adaptkit.parse_target`` dispatches between the two.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from adaptkit.core.records import Layout, TargetSpec, parse_enum
from adaptkit.core.shapes import check_channels, check_stride, short_repr
from adaptkit.errors import TargetError

__all__ = ["parse_spec_target", "is_spec", "target_from_spec", "target_from_dict", "exact", "probe_shape"]

_NUMBER = r"\d+(?:\.\d+)?"
_SPEC = re.compile(rf"^\s*(\d+)\s*@\s*({_NUMBER})(?:\s*[x,]\s*({_NUMBER}))?\s*$")
#: the stride of a heatmap relative to the input when nothing says otherwise (mmpose's codecs use 4)
DEFAULT_HEATMAP_STRIDE = 4


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


def is_spec(text: str) -> bool:
    """Whether ``text`` is written as CHANNELS@STRIDE."""
    return bool(_SPEC.match(text.strip()))


def parse_spec_target(target: Any) -> TargetSpec:
    """A TargetSpec, a ``CHANNELS@STRIDE`` string or a plain dict -> TargetSpec; TargetError otherwise."""
    if isinstance(target, TargetSpec):
        return target
    if isinstance(target, Mapping) and "type" not in target:
        return target_from_dict(target)
    if isinstance(target, str) and is_spec(target):
        return target_from_spec(target.strip())
    raise TargetError(
        f"cannot read target {target!r}; write CHANNELS@STRIDE (e.g. 32@4), a config file, or mmpose::path/to/config.py"
    )


def target_from_spec(text: str) -> TargetSpec:
    """``"32@4"`` (32 channels at stride 4) or ``"32@4x8"`` (stride 4 in height, 8 in width)."""
    match = _SPEC.match(text)
    if not match:
        raise TargetError(f"target spec {short_repr(text)} is not CHANNELS@STRIDE, e.g. 32@4")
    prefix = f"target spec {short_repr(text)}: "
    channels = check_channels(_number(match.group(1), int), TargetError, prefix)
    sh = check_stride(_number(match.group(2), float), TargetError, prefix)
    sw = check_stride(_number(match.group(3), float), TargetError, prefix) if match.group(3) else sh
    try:
        return TargetSpec(channels=channels, stride=(sh, sw), source=text)
    except ValueError as exc:
        raise TargetError(f"target spec {short_repr(text)}: {exc}") from None


def _number(text: str, kind: type) -> int | float:
    """A spec's digits as a number; a huge one as inf (never a 5000-digit int, which str() refuses)."""
    whole = text.split(".")[0].lstrip("0")
    if len(whole) > 18:
        return math.inf if kind is float else 1 << 64
    return kind(text)  # type: ignore[no-any-return]


def target_from_dict(data: Mapping[str, Any]) -> TargetSpec:
    known = {f.name for f in fields(TargetSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TargetError(f"unknown target field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
    values = dict(data)
    try:
        if "channels" in values:
            values["channels"] = check_channels(values["channels"], TargetError)
        stride = values.get("stride")
        if isinstance(stride, (str, bytes)):
            raise TargetError(
                f"cannot read target: stride must be a number or (height, width), got the string {short_repr(stride)}"
            )
        if stride is not None and not isinstance(stride, (list, tuple)):
            one = check_stride(stride, TargetError)
            values["stride"] = (one, one)
        elif stride is not None:
            values["stride"] = tuple(check_stride(s, TargetError) for s in stride)
        if "layout" in values:
            values["layout"] = parse_enum(Layout, values["layout"], "layout")
        for key in ("heatmap_size", "input_size"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return TargetSpec(**values)
    except TargetError:
        raise
    except (TypeError, ValueError) as exc:
        raise TargetError(f"cannot read target {short_repr(dict(data))}: {exc}") from None
