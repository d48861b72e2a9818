"""A backbone and its planned adapter as one module (what ``adaptkit.wrap`` returns)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from adaptkit.core.building import build_adapter
from adaptkit.core.records import AdapterPlan

__all__ = ["WrappedBackbone", "wrap_module"]


class WrappedBackbone(nn.Module):
    """backbone -> adapter; returns what the target head expects, a tuple of maps in its order.

    The adapter is given the input's size, so the output size is exact for
    any input the backbone accepts.
    """

    def __init__(self, backbone: nn.Module, adapter: nn.Module, plan: AdapterPlan) -> None:
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter
        self.plan = plan

    def forward(self, x: torch.Tensor) -> tuple[Any, ...]:
        return self.adapter(self.backbone(x), input_hw=(x.shape[-2], x.shape[-1]))


def wrap_module(model: nn.Module, adapter_plan: AdapterPlan) -> WrappedBackbone:
    """``model`` followed by a fresh adapter built from ``adapter_plan``, on the backbone's device and dtype.

    A bf16 or CUDA backbone gets a bf16 or CUDA adapter: the adapter's
    weights meet the backbone's features, so they must match them.
    """
    adapter = build_adapter(adapter_plan)
    placed = _placement(model)
    if placed is not None:
        adapter = adapter.to(device=placed[0], dtype=placed[1])
    return WrappedBackbone(model, adapter, adapter_plan)


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype] | None:
    """(device, dtype) of the backbone's first floating-point parameter or buffer; None for a meta or empty one."""
    from adaptkit.core.preserve import initialised

    for tensor in initialised((*model.parameters(), *model.buffers())):
        if tensor.is_floating_point() and not tensor.is_meta:
            return tensor.device, tensor.dtype
    return None
