"""Walk nested backbone outputs and address their tensors by path.

A path joins the keys from the top of the output down to one tensor with
dots: list/tuple index ("2.1.1"), dict key ("stage3"), namedtuple or
dataclass field ("logits"). The probe names features with it, and the
adapter selects its input with the same function, so the two always agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["iter_tensors", "select", "has_path", "replace"]


def _children(obj: Any) -> Iterator[tuple[str, Any]] | None:
    """The (key, child) pairs of a container, or None for a leaf."""
    if isinstance(obj, Mapping):
        return ((str(k), v) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return ((name, getattr(obj, name)) for name in obj._fields)
    if isinstance(obj, (list, tuple)):
        return ((str(i), v) for i, v in enumerate(obj))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    return None


def iter_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (path, tensor) for every tensor in ``obj``, depth first, in order."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
        return
    children = _children(obj)
    if children is None:
        return
    for key, child in children:
        yield from iter_tensors(child, f"{prefix}.{key}" if prefix else key)


def _step(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if str(k) == key:
                return v
        raise KeyError(key)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        if key in obj._fields:
            return getattr(obj, key)
        return obj[int(key)]
    if isinstance(obj, (list, tuple)):
        return obj[int(key)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return getattr(obj, key)
    raise KeyError(key)


def select(obj: Any, path: str) -> torch.Tensor:
    """The tensor at ``path`` in ``obj``; a bare tensor answers to ``""``.

    Raises KeyError naming the path and the first key that does not exist.
    """
    if path == "":
        if isinstance(obj, torch.Tensor):
            return obj
        raise KeyError("the empty path names a bare tensor, but the output is a container")
    node = obj
    walked: list[str] = []
    for key in path.split("."):
        try:
            node = _step(node, key)
        except (KeyError, IndexError, ValueError, AttributeError):
            where = ".".join(walked) or "the output"
            raise KeyError(f"path {path!r}: {where} has no element {key!r}") from None
        walked.append(key)
    if not isinstance(node, torch.Tensor):
        raise KeyError(f"path {path!r} names a {type(node).__name__}, not a tensor")
    return node


def has_path(obj: Any, path: str) -> bool:
    try:
        select(obj, path)
    except KeyError:
        return False
    return True


def _rebuilt(obj: Any, key: str, child: Any) -> Any:
    """A shallow copy of the container ``obj`` with its element ``key`` set to ``child``."""
    if isinstance(obj, Mapping):
        for k in obj:
            if str(k) == key:
                items = dict(obj)
                items[k] = child
                mapping_type: Any = type(obj)
                try:
                    return mapping_type(items)
                except TypeError:  # a mapping type that cannot be built from a dict
                    return items
        raise KeyError(key)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple: by field name or index
        named: Any = obj
        name = key if key in named._fields else named._fields[int(key)]
        return named._replace(**{name: child})
    if isinstance(obj, (list, tuple)):
        elements = list(obj)
        elements[int(key)] = child
        return type(obj)(elements)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if key not in {f.name for f in dataclasses.fields(obj)}:
            raise KeyError(key)
        return dataclasses.replace(obj, **{key: child})  # type: ignore[type-var]
    raise KeyError(key)


def replace(obj: Any, path: str, value: Any) -> Any:
    """A copy of ``obj`` with the element at ``path`` set to ``value``; ``obj`` itself is not changed.

    Containers on the path are rebuilt as their own type (a namedtuple stays
    that namedtuple, a dataclass is rebuilt with ``dataclasses.replace``);
    everything off the path is shared, not copied. ``""`` answers ``value``.
    Raises KeyError naming the path and the first key that does not exist.
    """
    if path == "":
        return value
    keys = path.split(".")
    nodes = [obj]
    for i, key in enumerate(keys[:-1]):
        try:
            nodes.append(_step(nodes[-1], key))
        except (KeyError, IndexError, ValueError, AttributeError):
            where = ".".join(keys[:i]) or "the output"
            raise KeyError(f"path {path!r}: {where} has no element {key!r}") from None
    child = value
    for i in range(len(keys) - 1, -1, -1):
        try:
            child = _rebuilt(nodes[i], keys[i], child)
        except (KeyError, IndexError, ValueError, AttributeError):
            where = ".".join(keys[:i]) or "the output"
            raise KeyError(f"path {path!r}: {where} has no element {keys[i]!r}") from None
    return child
