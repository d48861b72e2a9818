"""How numbers, shapes and strides are written in tables and explanations, in one place."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_number", "format_shape", "format_stride", "format_count"]


def format_number(value: float) -> str:
    """4 for 4.0; up to three decimals otherwise."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0")


def format_shape(shape: Sequence[int]) -> str:
    """(2, 256, 80, 80) -> '2x256x80x80'."""
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def format_stride(stride: Sequence[float]) -> str:
    """(8, 8) -> '8'; (8, 4) -> '8x4' (height x width)."""
    h, w = (format_number(s) for s in stride)
    return h if h == w else f"{h}x{w}"


def format_count(n: float) -> str:
    """12_582_912 -> '12.58M' (MACs, bytes, parameters)."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))
