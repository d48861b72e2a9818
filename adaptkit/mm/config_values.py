"""Type-checked reads of the config values adaptkit uses (a config is user input like any other).

``model.head=None``, ``in_channels='abc'``, ``input_size=(64,)`` or
``heatmap_size='xy'`` each become one ConfigError naming the key, the value
and what it should be, never a TypeError from deep inside a reader.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from adaptkit.core.shapes import MAX_CHANNELS, MAX_DIM, short_repr
from adaptkit.errors import ConfigError

__all__ = ["config_section", "config_int", "config_pair"]


def config_section(value: Any, key: str) -> Mapping[str, Any]:
    """A dict-like section (``model.head``, ``codec``)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"config {key} is {short_repr(value)}; it must be a dict(...) section")
    return value


def config_int(value: Any, key: str, *, maximum: int = MAX_CHANNELS) -> int:
    """A positive whole number (a channel count, a stage count); a whole float (64.0) is read as one."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ConfigError(f"config {key} is {short_repr(value)}; it must be a whole number from 1 to {maximum:,}")
    return value


def config_pair(value: Any, key: str) -> tuple[int, int]:
    """A (width, height) size, as mmpose's codecs write it; one int means a square."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        side = config_int(value, key, maximum=MAX_DIM)
        return (side, side)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ConfigError(f"config {key} is {short_repr(value)}; it must be (width, height), e.g. (192, 256)")
    w, h = value
    return (config_int(w, key, maximum=MAX_DIM), config_int(h, key, maximum=MAX_DIM))
