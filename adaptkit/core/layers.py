"""The per-layer table (``adaptkit probe --layers``), read by torchinfo on the meta device when it can."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.func import functional_call

from adaptkit.core.records import LayerRow

__all__ = ["layer_rows"]


class _Summarize(nn.Module):
    """Runs torchinfo on its child from inside ``functional_call``.

    functional_call swaps tensors only around a module call; calling torchinfo
    from this wrapper's forward lets torchinfo's own forward see the swapped
    (meta, or cloned) tensors, without moving or copying the model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.stats: Any = None
        self.nested: set[int] = set()  # modules that returned a container, not one tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torchinfo

        def note(module: nn.Module, _args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                self.nested.add(id(module))

        hooks = [m.register_forward_hook(note) for m in self.model.modules()]
        try:
            self.stats = torchinfo.summary(
                self.model,
                input_data=[x],
                depth=1_000,
                mode="train" if self.model.training else "eval",  # flags are restored by preserve.model_preserved
                verbose=0,
                col_names=("output_size", "num_params"),
            )
        finally:
            for hook in hooks:
                hook.remove()
        return x


def layer_rows(
    model: nn.Module, x: torch.Tensor, tensors: dict[str, torch.Tensor], names: dict[int, str]
) -> tuple[LayerRow, ...]:
    """torchinfo's per-layer rows for one forward on ``x``, with ``tensors`` swapped into the model.

    ``tensors`` maps the model's own parameter/buffer names to what the
    forward should see (meta tensors, or buffer clones); the model's tensors
    are never touched. Errors from the forward propagate to the caller.
    """
    wrapper = _Summarize(model)
    swapped = {f"model.{name}": tensor for name, tensor in tensors.items()}
    with torch.no_grad():
        try:
            functional_call(wrapper, swapped, (x,), tie_weights=False)
        finally:
            _forget_torchinfo_cache(model)
    rows = []
    for info in wrapper.stats.summary_list:
        size = info.output_size  # torchinfo sizes one tensor of a container output: report none then
        flat = (
            id(info.module) not in wrapper.nested
            and isinstance(size, (list, tuple))
            and all(isinstance(d, int) for d in size)
        )
        rows.append(
            LayerRow(
                name=names.get(id(info.module), info.var_name),
                type=info.class_name,
                depth=int(info.depth),
                output_shape=tuple(size) if flat else None,
                params=int(info.num_params),
            )
        )
    return tuple(rows)


def _forget_torchinfo_cache(model: nn.Module) -> None:
    """torchinfo keeps the last summary per class name, and with it the model; drop ours."""
    import torchinfo.torchinfo as impl

    cache = getattr(impl, "_cached_forward_pass", None)
    if isinstance(cache, dict):
        cache.pop(type(model).__name__, None)
