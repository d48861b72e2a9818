"""Which optional packages a config's data pipelines need that this install lacks.

A wrapped RTMPose config no longer needs mmdet for its backbone, but its
train pipeline still names ``mmdet.YOLOXHSVRandomAug`` and ``Albumentation``
(the albumentations package). ``adaptkit doctor --config`` reports them, so
the fragment loading fine is not mistaken for the whole config running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MissingTransform", "pipeline_needs"]

#: a word in the failure -> the package that provides the transform
_PACKAGES = {"albumentations": "albumentations", "mmdet": "mmdet", "mmpretrain": "mmpretrain", "mmcv.ops": "full mmcv"}


@dataclass(frozen=True)
class MissingTransform:
    """One pipeline step this install cannot build, and the package it needs."""

    pipeline: str  # e.g. "train_pipeline"
    transform: str
    package: str


def _steps(cfg: Any) -> list[tuple[str, Mapping[str, Any]]]:
    found = []
    for key in ("train_pipeline", "val_pipeline", "test_pipeline", "train_pipeline_stage2"):
        steps = cfg.get(key)
        if isinstance(steps, (list, tuple)):
            found += [(key, s) for s in steps if isinstance(s, Mapping) and "type" in s]
    return found


def pipeline_needs(config: str) -> tuple[MissingTransform, ...]:
    """Every step of ``config``'s pipelines that cannot be built here, with the package that provides it."""
    from mmengine.registry import init_default_scope
    from mmpose.registry import TRANSFORMS

    from adaptkit.mm.openmmlab import ensure_mmpose, load_config, quiet

    ensure_mmpose()
    cfg = load_config(config)
    missing = []
    seen = set()
    with quiet():
        init_default_scope("mmpose")
        for pipeline, step in _steps(cfg):
            kind = str(step["type"])
            if kind in seen:
                continue
            try:
                TRANSFORMS.build(dict(step))
            except Exception as exc:  # a registry miss or the transform's own import failing
                text = f"{kind} {type(exc).__name__} {exc}"
                package = next((p for word, p in _PACKAGES.items() if word in text), kind.partition(".")[0])
                missing.append(MissingTransform(pipeline, kind, package))
            seen.add(kind)
    return tuple(missing)
