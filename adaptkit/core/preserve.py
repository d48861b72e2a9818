"""Leave a model as it was found: the probe's promise, kept in one place.

Every trace (the meta probe, the real fallback, the reachability trace) runs
inside ``model_preserved``: training flags, plain tensor attributes a forward
caches, and the random generators come back as they were, whatever happens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

__all__ = ["model_preserved"]


@contextlib.contextmanager
def model_preserved(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Training flags, plain tensor attributes and RNG state as they were, whatever happens."""
    flags = [(m, m.training) for m in model.modules()]
    # every attribute that is, or may become, a tensor: a forward may cache one (weight_norm does)
    attributes = [
        (m, key, value)
        for m in model.modules()
        for key, value in vars(m).items()
        if value is None or isinstance(value, torch.Tensor)
    ]
    cuda_devices: list[int] = []
    if torch.cuda.is_available() and (torch.cuda.is_initialized() or device.type == "cuda"):
        cuda_devices = list(range(torch.cuda.device_count()))
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            yield
    finally:
        for module, training in flags:
            module.training = training
        _restore_tensor_attributes(attributes)


def _restore_tensor_attributes(saved: list[tuple[nn.Module, str, Any]]) -> None:
    """Put back plain tensor attributes a forward replaced, and drop the ones it added."""
    before: dict[int, dict[str, Any]] = {}
    modules: dict[int, nn.Module] = {}
    for module, key, value in saved:
        before.setdefault(id(module), {})[key] = value
        modules[id(module)] = module
    for module_id, module in modules.items():
        state = vars(module)
        old = before[module_id]
        for key, value in list(state.items()):
            if key in old:
                if value is not old[key]:
                    state[key] = old[key]
            elif isinstance(value, torch.Tensor):
                del state[key]  # a tensor cached by the forward (a meta tensor, possibly)
        for key, value in old.items():
            state.setdefault(key, value)
