"""A backbone and its planned adapter as one module (what ``adaptkit.wrap`` returns)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from adaptkit.core.adapter import MultiShapeAdapter, ShapeAdapter
from adaptkit.core.building import build_adapter
from adaptkit.core.records import AdapterPlan

__all__ = ["WrappedBackbone", "wrap_module"]


class WrappedBackbone(nn.Module):
    """backbone -> adapter; returns what the target head expects, a tuple of maps in its order.

    The adapter is given the input's size, so the output size is exact for
    any input the backbone accepts.
    """

    def __init__(self, backbone: nn.Module, adapter: ShapeAdapter | MultiShapeAdapter, plan: AdapterPlan) -> None:
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter
        self.plan = plan

    def forward(self, x: torch.Tensor) -> tuple[Any, ...]:
        return self.adapter(self.backbone(x), input_hw=(x.shape[-2], x.shape[-1]))


def wrap_module(model: nn.Module, adapter_plan: AdapterPlan) -> WrappedBackbone:
    """``model`` followed by a fresh adapter built from ``adapter_plan``."""
    return WrappedBackbone(model, build_adapter(adapter_plan), adapter_plan)
