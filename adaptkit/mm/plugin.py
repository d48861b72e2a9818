"""Registers adaptkit's modules in mmpose's MODELS registry.

A config fragment names this module in ``custom_imports``; nothing in
mmpose is edited or patched. Importing it needs mmpose and mmengine.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from mmengine.model import BaseModule
from mmpose.registry import MODELS

from adaptkit.core.adapter import MultiShapeAdapter, ShapeAdapter
from adaptkit.mm.distill import ChannelWiseDistillLoss, DistillHead
from adaptkit.mm.estimator import AuxHeatmapHead, AuxiliaryHead, AuxTopdownPoseEstimator
from adaptkit.mm.necks import AdapterThenNeck
from adaptkit.sources import resolve_source
from adaptkit.zoo.sctnet import SCTNet

__all__ = ["ForeignBackbone"]


class ForeignBackbone(BaseModule):
    """Any SOURCE adaptkit resolves (zoo name, module:callable, file.py:Name) as an mmpose backbone.

    ``init_cfg=dict(type='Pretrained', checkpoint=FILE)`` loads FILE with
    adaptkit's checkpoint loader, which finds the state dict and lines up
    prefixes (``backbone.``, ``module.``) itself; a partial load is refused
    unless ``allow_partial=True``.
    """

    def __init__(
        self,
        source: str,
        kwargs: dict[str, Any] | None = None,
        allow_partial: bool = False,
        init_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.source = source
        self.allow_partial = allow_partial
        self.body: nn.Module = resolve_source(source, **(kwargs or {}))

    def init_weights(self) -> None:
        cfg = self.init_cfg if isinstance(self.init_cfg, dict) else None
        if cfg is not None and cfg.get("type") == "Pretrained":
            from adaptkit.mm.checkpoint import load_checkpoint

            load_checkpoint(self.body, cfg["checkpoint"], allow_partial=self.allow_partial)
            self._is_init = True
            return
        super().init_weights()

    def forward(self, x: Any) -> Any:
        return self.body(x)


# force=True: re-importing this module (a second config, a spawned worker) re-binds the same classes
for _name, _module in (
    ("SCTNet", SCTNet),
    ("ForeignBackbone", ForeignBackbone),
    ("ShapeAdapter", ShapeAdapter),
    ("MultiShapeAdapter", MultiShapeAdapter),
    ("AdapterThenNeck", AdapterThenNeck),
    ("AuxTopdownPoseEstimator", AuxTopdownPoseEstimator),
    ("AuxiliaryHead", AuxiliaryHead),
    ("AuxHeatmapHead", AuxHeatmapHead),
    ("DistillHead", DistillHead),
    ("ChannelWiseDistillLoss", ChannelWiseDistillLoss),
):
    MODELS.register_module(name=_name, module=_module, force=True)
