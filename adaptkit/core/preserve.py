"""Leave a model as it was found: the probe's promise, kept in one place.

Every trace (the meta probe, the real fallback, the per-layer table, the
reachability trace) runs inside ``model_preserved`` and swaps tensors in
with ``swapped``.

A forward may change far more than parameters and buffers: it flips
training flags, caches tensors in attributes and in dicts (timm's
``attention_bias_cache``), initialises lazy modules (their parameters change
class in place, their hooks remove themselves, the module changes class),
counts calls, and draws from torch's, Python's and NumPy's generators.
``model_preserved`` takes a shallow snapshot of every module's attributes and of
the containers among them, and restores them whatever happens; ``swapped``
gives ``functional_call`` one new tensor per original for every
(module, attribute) alias, so a submodule reused under several names
(timm's CoaT) is swapped under every name and left on its real device.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]

__all__ = ["model_preserved", "swapped", "has_lazy_tensors", "count_parameters", "initialised"]

_CONTAINERS = (dict, list, set)


def swapped(
    model: nn.Module, make: Callable[[torch.Tensor], torch.Tensor], *, parameters: bool = True, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """``{name: make(tensor)}`` for every parameter and buffer under every name it has.

    One new tensor per original tensor, shared by its aliases (a tied weight
    stays tied); pass the result to ``functional_call(..., tie_weights=False)``.
    Uninitialised (lazy) tensors are left out: there is nothing to swap yet.
    """
    made: dict[int, torch.Tensor] = {}
    tensors: dict[str, torch.Tensor] = {}
    named = (
        (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False))
        if parameters
        else tuple(model.named_buffers(remove_duplicate=False))
    )
    for name, tensor in named:
        if isinstance(tensor, UninitializedTensorMixin):
            continue
        if id(tensor) not in made:
            made[id(tensor)] = make(tensor)
        tensors[prefix + name] = made[id(tensor)]
    return tensors


def count_parameters(model: nn.Module) -> int:
    """Parameters of ``model``; a lazy module's uninitialised ones count 0 (their size is not known yet)."""
    return sum(p.numel() for p in model.parameters() if not isinstance(p, UninitializedTensorMixin))


def initialised(tensors: Iterator[torch.Tensor] | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """``tensors`` without a lazy module's uninitialised ones (most torch calls refuse those)."""
    return [t for t in tensors if not isinstance(t, UninitializedTensorMixin)]


def has_lazy_tensors(model: nn.Module) -> bool:
    """Whether a lazy module has not been initialised yet (its first forward would change it)."""
    return any(isinstance(t, UninitializedTensorMixin) for t in (*model.parameters(), *model.buffers()))


class _Snapshot:
    """Every module's class and attributes, the containers among them, lazy tensors and plain tensor values."""

    def __init__(self, model: nn.Module) -> None:
        self.modules: list[tuple[nn.Module, type, dict[str, Any], dict[str, Any]]] = []
        self.lazy: list[tuple[torch.Tensor, type, torch.Tensor]] = []
        self.values: list[tuple[torch.Tensor, int, torch.Tensor]] = []
        owned: set[int] = set()
        for module in model.modules():
            state = vars(module)
            contents = {key: _copy(value) for key, value in state.items() if isinstance(value, _CONTAINERS)}
            self.modules.append((module, type(module), dict(state), contents))
            owned.update(id(t) for t in state.get("_parameters", {}).values() if t is not None)
            owned.update(id(t) for t in state.get("_buffers", {}).values() if t is not None)
        for tensor in (*model.parameters(), *model.buffers()):
            if isinstance(tensor, UninitializedTensorMixin):
                self.lazy.append((tensor, type(tensor), tensor.data))
        for _, _, state, _ in self.modules:
            for value in state.values():
                # a plain tensor attribute a forward may write in place (a step counter, a cache)
                if (
                    isinstance(value, torch.Tensor)
                    and id(value) not in owned
                    and not value.is_meta
                    and not isinstance(value, UninitializedTensorMixin)
                ):
                    self.values.append((value, value._version, value.detach().clone()))

    def restore(self) -> None:
        for tensor, cls, data in self.lazy:
            if type(tensor) is not cls:  # materialised by a lazy module's first forward
                with torch.no_grad():
                    tensor.data = data
                tensor.__class__ = cls
        for module, cls, saved, contents in self.modules:
            if type(module) is not cls:
                module.__class__ = cls
            state = vars(module)
            for key in [k for k in state if k not in saved]:
                del state[key]
            for key, value in saved.items():
                if state.get(key, _MISSING) is not value:
                    state[key] = value
                if key in contents and _changed(value, contents[key]):
                    _refill(value, contents[key])
        with torch.no_grad():
            for tensor, version, copy in self.values:
                if tensor._version != version:
                    tensor.copy_(copy)


_MISSING = object()


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else set(value)


def _changed(current: Any, saved: Any) -> bool:
    if len(current) != len(saved):
        return True
    if isinstance(current, dict):
        return any(current.get(k, _MISSING) is not v for k, v in saved.items())
    if isinstance(current, list):
        return any(a is not b for a, b in zip(current, saved, strict=True))
    return current != saved


def _refill(current: Any, saved: Any) -> None:
    current.clear()
    if isinstance(current, list):
        current.extend(saved)
    else:
        current.update(saved)


def _rng_states() -> list[tuple[Callable[[Any], Any], Any]]:
    states: list[tuple[Callable[[Any], Any], Any]] = [(random.setstate, random.getstate())]
    numpy = sys.modules.get("numpy")  # only when the user's code has it loaded: never imported here
    if numpy is not None:
        states.append((numpy.random.set_state, numpy.random.get_state()))
    return states


def _cuda_devices(device: torch.device | None) -> list[int]:
    if not torch.cuda.is_available():
        return []
    if torch.cuda.is_initialized() or (device is not None and device.type == "cuda"):
        return list(range(torch.cuda.device_count()))
    return []


@contextlib.contextmanager
def model_preserved(model: nn.Module, device: torch.device | None = None) -> Iterator[None]:
    """The model's modules, attributes, containers and lazy tensors, and every RNG, as they were."""
    snapshot = _Snapshot(model)
    generators = _rng_states()
    try:
        with torch.random.fork_rng(devices=_cuda_devices(device)):
            yield
    finally:
        snapshot.restore()
        for set_state, state in generators:
            set_state(state)
