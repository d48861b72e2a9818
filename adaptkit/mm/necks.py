"""The adapter followed by the stock neck, as one estimator ``neck``.

mmpose's estimators take one neck. A regression head reads a vector that
its stock GlobalAveragePooling neck makes from the backbone's map; keeping
that neck (rather than asking the adapter to pool) keeps the head's input
exactly what the stock config trains on. ``AdapterThenNeck`` runs the
planned adapter, then the stock neck on the adapter's maps.
"""

from __future__ import annotations

from typing import Any

from mmengine.model import BaseModule

from adaptkit.core.adapter import ADAPTERS, build_adapter_module
from adaptkit.errors import BuildError

__all__ = ["AdapterThenNeck"]


class AdapterThenNeck(BaseModule):
    """``adapter`` (an adaptkit adapter config: ShapeAdapter, ScaleFusionAdapter...), then ``neck`` (a stock neck config)."""

    def __init__(self, adapter: dict[str, Any], neck: dict[str, Any], init_cfg: Any = None) -> None:
        super().__init__(init_cfg=init_cfg)
        from mmpose.registry import MODELS

        kind = dict(adapter).get("type", "ShapeAdapter")
        if kind not in ADAPTERS:
            raise BuildError(f"AdapterThenNeck's adapter must be one of {', '.join(ADAPTERS)}, got {kind!r}")
        self.adapter = build_adapter_module(dict(adapter))
        self.neck = MODELS.build(dict(neck))

    def forward(self, feats: Any) -> Any:
        return self.neck(self.adapter(feats))
