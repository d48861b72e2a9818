"""Parse and check the input shapes users type (``2x3x640x640``)."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence

from adaptkit.errors import InputShapeError

__all__ = ["parse_input_shape", "short_repr", "check_channels", "check_stride", "MAX_DIM", "MAX_CHANNELS"]

_SEPARATORS = re.compile(r"[x,X*\s]+")


#: the largest dimension adaptkit accepts (torch indexes sizes with 64-bit ints; kernels often with 32)
MAX_DIM = 2**31 - 1
#: the largest element count of the dummy input (it stays on the meta device, but its size must be an int64)
MAX_NUMEL = 2**62
_DIGITS = re.compile(r"[0-9]+")
_FOUR = "BATCHxCHANNELSxHEIGHTxWIDTH, e.g. 2x3x640x640"
_HINT = f"write it as {_FOUR}"


def short_repr(value: object) -> str:
    """repr() for a message, short, and never raising (repr of a 5000-digit int does)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _dimension(value: object, shown: object) -> int:
    """One dimension: an int (or numpy/torch integer), never a bool or a float."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise InputShapeError(
            f"input shape {short_repr(shown)} holds {short_repr(value)} ({type(value).__name__}); every dimension must be an integer"
        )
    return operator.index(value)  # type: ignore[arg-type]


def parse_input_shape(value: object) -> tuple[int, int, int, int]:
    """``"2x3x640x640"`` or ``(2, 3, 640, 640)`` -> a checked NCHW tuple.

    Raises InputShapeError for anything that is not four positive integers
    (no bools, no floats, nothing past ``MAX_DIM``).
    """
    if isinstance(value, str):
        parts = [p for p in _SEPARATORS.split(value.strip()) if p]
        if not all(_DIGITS.fullmatch(p) for p in parts):
            raise InputShapeError(f"input shape {short_repr(value)} is not a list of integers; {_HINT}")
        if any(len(p.lstrip("0")) > 12 for p in parts):  # never turn 5000 digits into an int
            raise InputShapeError(f"input shape {short_repr(value)} has a dimension over {MAX_DIM:,}; {_HINT}")
        dims = tuple(int(p) for p in parts)
    elif isinstance(value, (bytes, bytearray)) or not hasattr(value, "__iter__"):
        raise InputShapeError(
            f"input shape {short_repr(value)} is not a sequence of integers; pass (batch, channels, height, width)"
        )
    else:
        try:
            items = list(value)  # type: ignore[call-overload]
        except Exception:
            raise InputShapeError(
                f"input shape {short_repr(value)} is not a sequence of integers; pass (batch, channels, height, width)"
            ) from None
        dims = tuple(_dimension(d, value) for d in items)
    if len(dims) != 4:
        raise InputShapeError(f"input shape {short_repr(value)} has {len(dims)} dimensions; give four, {_FOUR}")
    if any(d <= 0 for d in dims):
        raise InputShapeError(
            f"input shape {short_repr(value)} has a zero or negative size; every dimension must be at least 1"
        )
    if any(d > MAX_DIM for d in dims) or math.prod(dims) > MAX_NUMEL:
        raise InputShapeError(
            f"input shape {short_repr(value)} is too large (each dimension at most {MAX_DIM:,}); pass the size the model takes"
        )
    return dims  # type: ignore[return-value]


#: the most channels a target may ask for, and the stride range (in input pixels per feature pixel)
MAX_CHANNELS = 1 << 20
MIN_STRIDE = 1 / 64
MAX_STRIDE = 1 << 16


def check_channels(value: object, error: type[Exception], prefix: str = "") -> int:
    """A channel count: an int up to MAX_CHANNELS, never a bool or a float (``TargetSpec`` refuses <= 0)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise error(f"{prefix}target channels must be a positive integer, got {short_repr(value)}")
    channels = operator.index(value)  # type: ignore[arg-type]
    if channels > MAX_CHANNELS:
        raise error(f"{prefix}target channels {_short_int(channels)} are too many; give at most {MAX_CHANNELS:,}")
    return channels


def _short_int(n: int) -> str:
    """An int for a message; a huge one by its size (str() of 5000 digits raises)."""
    return str(n) if abs(n) < 10**12 else f"of {n.bit_length()} bits"


def check_stride(value: object, error: type[Exception], prefix: str = "") -> float:
    """A stride: a finite number from 1/64 to MAX_STRIDE, an int when whole (``TargetSpec`` refuses <= 0)."""
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        raise error(f"{prefix}target stride must be a number, got {short_repr(value)}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (OverflowError, ValueError, TypeError):
        raise error(f"{prefix}target stride is not a number adaptkit can use") from None
    if not math.isfinite(number) or number > MAX_STRIDE or 0 < number < MIN_STRIDE:
        shown = f"{number:g}" if math.isfinite(number) else str(number)
        raise error(
            f"{prefix}target stride {shown} is out of range; give a stride from 1/64 to {MAX_STRIDE:,} (e.g. 4)"
        )
    return int(round(number)) if abs(number - round(number)) < 1e-9 else number


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
