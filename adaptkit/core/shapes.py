"""Parse and check the input shapes users type (``2x3x640x640``)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from adaptkit.errors import InputShapeError

__all__ = ["parse_input_shape"]

_SEPARATORS = re.compile(r"[x,X*\s]+")


def parse_input_shape(value: str | Sequence[int]) -> tuple[int, int, int, int]:
    """``"2x3x640x640"`` or ``(2, 3, 640, 640)`` -> a checked NCHW tuple.

    Raises InputShapeError for anything that is not four positive integers.
    """
    if isinstance(value, str):
        text = value.strip()
        parts = [p for p in _SEPARATORS.split(text) if p]
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            raise InputShapeError(
                f"input shape {value!r} is not a list of integers; write it as BATCHxCHANNELSxHEIGHTxWIDTH, e.g. 2x3x640x640"
            ) from None
    else:
        try:
            dims = tuple(int(d) for d in value)
        except (TypeError, ValueError):
            raise InputShapeError(
                f"input shape {value!r} is not a sequence of integers; pass (batch, channels, height, width)"
            ) from None
    if len(dims) != 4:
        raise InputShapeError(
            f"input shape {value!r} has {len(dims)} dimensions; give four, BATCHxCHANNELSxHEIGHTxWIDTH, e.g. 2x3x640x640"
        )
    if any(d <= 0 for d in dims):
        raise InputShapeError(f"input shape {value!r} has a zero or negative size; every dimension must be at least 1")
    return dims  # type: ignore[return-value]


def target_size(
    hw: tuple[int, int],
    feature_stride: Sequence[float],
    target_stride: Sequence[float],
    input_hw: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The (height, width) the target expects.

    From the input size when it is known (rounded up, as padded strided
    convs round), else from the feature's own size scaled by the stride
    ratio (exact for inputs divisible by the backbone's largest stride).
    """
    if input_hw is not None:
        return (
            max(1, math.ceil(input_hw[0] / target_stride[0] - 1e-9)),
            max(1, math.ceil(input_hw[1] / target_stride[1] - 1e-9)),
        )
    return (
        max(1, round(hw[0] * feature_stride[0] / target_stride[0])),
        max(1, round(hw[1] * feature_stride[1] / target_stride[1])),
    )
