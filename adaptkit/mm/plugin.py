"""Registers adaptkit's modules in mmpose's MODELS registry.

A config fragment names this module in ``custom_imports``; nothing in
mmpose is edited or patched. Importing it needs mmpose and mmengine.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch.nn as nn
from mmengine.model import BaseModule
from mmpose.registry import MODELS

from adaptkit.core.adapter import MultiShapeAdapter, ScaleFusionAdapter, ShapeAdapter
from adaptkit.mm.distill import ChannelWiseDistillLoss, DistillHead
from adaptkit.mm.estimator import AuxHeatmapHead, AuxiliaryHead, AuxTopdownPoseEstimator
from adaptkit.mm.necks import AdapterThenNeck
from adaptkit.sources import resolve_source
from adaptkit.zoo.sctnet import SCTNet

__all__ = ["ForeignBackbone", "register"]


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


def _same_class(a: type, b: type) -> bool:
    """The same class, or the same one bound again by a re-import (a reload, a spawned worker)."""
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register(name: str, cls: type, *, required: bool = True) -> bool:
    """Register ``cls`` as ``name`` in mmpose's MODELS, never replacing someone else's class.

    adaptkit's own earlier binding of the name is replaced (a re-import);
    another class under the name is kept: for a name the fragments need
    (``required``) that is a ConfigError, otherwise a warning, and False.
    """
    existing = MODELS.module_dict.get(name)
    if existing is None or _same_class(existing, cls):
        MODELS.register_module(name=name, module=cls, force=existing is not None)
        return True
    where = f"{existing.__module__}.{existing.__qualname__}"
    if required:
        from adaptkit.errors import ConfigError

        raise ConfigError(
            f"mmpose's MODELS registry already holds a {name!r} ({where}); adaptkit will not replace it, "
            "and its fragments need that name: register yours under another name"
        )
    warnings.warn(
        f"mmpose's MODELS already holds a {name!r} ({where}); adaptkit keeps it and does not register its own "
        f"{name} (fragments reach adaptkit's through ForeignBackbone)",
        stacklevel=2,
    )
    return False


for _name, _module in (
    ("ForeignBackbone", ForeignBackbone),
    ("ShapeAdapter", ShapeAdapter),
    ("MultiShapeAdapter", MultiShapeAdapter),
    ("ScaleFusionAdapter", ScaleFusionAdapter),
    ("AdapterThenNeck", AdapterThenNeck),
    ("AuxTopdownPoseEstimator", AuxTopdownPoseEstimator),
    ("AuxiliaryHead", AuxiliaryHead),
    ("AuxHeatmapHead", AuxHeatmapHead),
    ("DistillHead", DistillHead),
    ("ChannelWiseDistillLoss", ChannelWiseDistillLoss),
):
    register(_name, _module)
register("SCTNet", SCTNet, required=False)  # a convenience name: a user's own SCTNet keeps it
