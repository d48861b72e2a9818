"""What a head consumes, read from an mmpose/mmengine config or a head module.

A config's head is read from its own settings (in_channels, deconvs,
in_featuremap_size, stages and units), its codec (input and heatmap sizes)
and its stock neck, through ``HEAD_READERS``, one row per head type. The
stock backbone is built and probed only for a head type no row reads. The
head is then traced once at exactly the grid its codec implies, so a wrong
reading fails here rather than in training. ``adaptkit.api.parse_target``
is the one door for every target form; it calls ``target_from_config`` and
``target_from_head`` here for configs and heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from adaptkit.core.records import TargetSpec
from adaptkit.core.targets import DEFAULT_HEATMAP_STRIDE, exact
from adaptkit.errors import AdaptkitError, ConfigError, MissingPackageError, TargetError
from adaptkit.mm.config_values import config_section
from adaptkit.mm.head_readers import (
    HEAD_READERS,
    KEPT_NECKS,
    HeadReading,
    Unreadable,
    codec_of,
    read_head,
    refuse_lifting,
    size_pair,
)

__all__ = [
    "HEAD_READERS",
    "KEPT_NECKS",
    "HeadReading",
    "read_head",
    "target_from_config",
    "target_from_head",
]


def _head_build_error(head_type: str, exc: ConfigError) -> TargetError:
    if isinstance(exc, MissingPackageError):
        return TargetError(f"{head_type} cannot be built here: it needs {exc.package}, which is not installed")
    return TargetError(f"cannot build {head_type}: {exc}")


def _dummy_inputs(target: TargetSpec, input_size: tuple[int, int]) -> Any:
    """Zero maps shaped as the head reads them at ``input_size`` (width, height), nested by groups."""
    maps = []
    for spec in target.inputs:
        stride = spec.stride or (32, 32)
        maps.append(
            torch.zeros(
                1,
                spec.channels,
                math.ceil(input_size[1] / stride[0] - 1e-9),
                math.ceil(input_size[0] / stride[1] - 1e-9),
            )
        )
    if target.groups is None:
        return tuple(maps)
    nested, start = [], 0
    for size in target.groups:
        nested.append(tuple(maps[start : start + size]))
        start += size
    return tuple(nested)


def _first_map(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value if value.dim() == 4 else None
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_map(item)
            if found is not None:
                return found
    return None


def _trace(head: nn.Module, neck: nn.Module | None, target: TargetSpec, reading: HeadReading, name: str) -> None:
    """Run the head once on zero maps at the codec's exact grid; TargetError when it does not fit."""
    assert target.input_size is not None
    feats = _dummy_inputs(target, target.input_size)
    was_training = head.training
    head.eval()
    from adaptkit.mm.openmmlab import quiet

    try:
        with torch.no_grad(), quiet():
            out = head(neck(feats) if neck is not None else feats)
    except Exception as exc:  # the head's own assertion or shape error
        cause = " ".join(str(exc).split()) or type(exc).__name__
        shapes = ", ".join("x".join(map(str, t.shape)) for t in _flat(feats))
        raise TargetError(
            f"config {name!r}: {target.head_type} does not run on the maps read from it ({shapes}): {cause}"
        ) from None
    finally:
        head.train(was_training)
    if reading.heatmap_out and target.heatmap_size is not None:
        heatmap = _first_map(out)
        made = None if heatmap is None else (int(heatmap.shape[-1]), int(heatmap.shape[-2]))
        if made != tuple(target.heatmap_size):
            raise TargetError(
                f"config {name!r}: {target.head_type} makes {made} heatmaps from the maps read from it, "
                f"but the codec wants {target.heatmap_size} (width, height)"
            )


def _flat(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for v in value for t in _flat(v)]


def target_from_config(name: str, **_: Any) -> TargetSpec:
    """Read a config's head, codec and neck; probe its stock backbone only for a head no reader knows."""
    from adaptkit.mm.openmmlab import build_model, config_path, load_config, package_scoped_name

    cfg = load_config(name)
    model_cfg = cfg.get("model")
    if not isinstance(model_cfg, Mapping) or "head" not in model_cfg:
        raise TargetError(f"config {name!r} has no model.head; give a pose estimator config")
    head_cfg = dict(config_section(model_cfg["head"], "model.head"))
    head_type = str(head_cfg.get("type"))
    if model_cfg.get("type") == "PoseLifter":
        refuse_lifting(head_cfg, None, None)
    codec = codec_of(cfg)
    neck_cfg = model_cfg.get("neck")
    scoped = package_scoped_name(config_path(name))
    try:
        reading = read_head(head_cfg, codec, neck_cfg)
    except Unreadable as exc:
        return _target_from_stock(name, cfg, head_cfg, codec, exc.fields, scoped)
    if codec is None:
        raise TargetError(f"config {name!r} names no codec input_size; pass the target as CHANNELS@STRIDE instead")
    try:
        head = build_model(head_cfg)
        neck = build_model(neck_cfg) if reading.kept_neck is not None else None
    except ConfigError as exc:
        raise _head_build_error(head_type, exc) from None
    heatmap = size_pair(codec["heatmap_size"], "codec.heatmap_size") if "heatmap_size" in codec else None
    target = TargetSpec(
        inputs=reading.inputs,
        groups=reading.groups,
        head_type=head_type,
        num_keypoints=_keypoints(head, head_cfg),
        heatmap_size=heatmap,
        input_size=size_pair(codec["input_size"], "codec.input_size"),
        featuremap_size=reading.featuremap_size,
        head_upsample=exact(reading.head_upsample),
        kept_neck=reading.kept_neck,
        source=name,
        config=scoped or str(config_path(name).resolve()),
    )
    _trace(head, neck, target, reading, name)
    return target


def _target_from_stock(
    name: str,
    cfg: Any,
    head_cfg: Mapping[str, Any],
    codec: Mapping[str, Any] | None,
    unread: Sequence[str],
    scoped: str | None,
) -> TargetSpec:
    """A head no reader knows: probe the config's own backbone (+neck) at the codec's size and read feats[-1]."""
    from adaptkit.core.probing import probe
    from adaptkit.mm.openmmlab import ConfigBackbone, build_model, config_path

    head_type = str(head_cfg.get("type"))
    unreadable = f"adaptkit cannot read head {head_type} (fields: {', '.join(unread)})"
    model_cfg = cfg["model"]
    if codec is None or "backbone" not in model_cfg:
        raise TargetError(
            f"{unreadable} and config {name!r} has no codec input_size and backbone to probe; pass the target as CHANNELS@STRIDE"
        )
    width, height = size_pair(codec["input_size"], "codec.input_size")
    try:
        body = ConfigBackbone(
            build_model(model_cfg["backbone"]), build_model(model_cfg["neck"]) if model_cfg.get("neck") else None
        )
    except ConfigError as exc:
        if isinstance(exc, MissingPackageError):
            why = f"its stock backbone needs {exc.package}"
        else:
            why = f"its stock backbone cannot be built ({exc})"
        raise TargetError(f"{unreadable}, and {why}; pass the target as CHANNELS@STRIDE") from None
    try:
        result = probe(body, (2, 3, height, width))
    except AdaptkitError as exc:
        raise TargetError(f"{unreadable}, and probing its stock backbone failed: {exc}") from None
    maps = [f for f in result.features if f.is_spatial and not f.is_input]
    if not maps:
        raise TargetError(f"{unreadable}, and its stock backbone returns no feature map")
    read = maps[-1]  # mmpose heads read feats[-1]
    in_channels = head_cfg.get("in_channels")
    if isinstance(in_channels, int) and in_channels != read.channels:
        raise TargetError(
            f"config {name!r} is inconsistent: its head expects {in_channels} channels but its backbone gives {read.channels}"
        )
    heatmap = size_pair(codec["heatmap_size"], "codec.heatmap_size") if "heatmap_size" in codec else None
    upsample = 1.0
    if heatmap is not None and read.spatial is not None:
        try:
            head = build_model(head_cfg)
        except ConfigError as exc:
            raise _head_build_error(head_type, exc) from None
        upsample = _head_upsample(head, read.channels, read.spatial)
        produced = (round(read.spatial[1] * upsample), round(read.spatial[0] * upsample))
        if produced != heatmap:
            raise TargetError(
                f"config {name!r}: its head produces {produced[0]}x{produced[1]} heatmaps but the codec wants "
                f"{heatmap[0]}x{heatmap[1]} (width x height)"
            )
    return TargetSpec.single(
        read.channels,
        (exact(read.stride[0]), exact(read.stride[1])),
        head_type=head_type,
        num_keypoints=int(head_cfg["out_channels"]) if isinstance(head_cfg.get("out_channels"), int) else None,
        heatmap_size=heatmap,
        input_size=(width, height),
        head_upsample=exact(upsample),
        source=name,
        config=scoped or str(config_path(name).resolve()),
    )


def _keypoints(head: nn.Module, head_cfg: Mapping[str, Any] | None = None) -> int | None:
    for value in (
        getattr(head, "out_channels", None),
        getattr(head, "num_keypoints", None),
        getattr(head, "num_joints", None),
        *((head_cfg.get(k) for k in ("out_channels", "num_keypoints", "num_joints")) if head_cfg else ()),
    ):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class _HeadOnTensor(nn.Module):
    """Calls a head the way an estimator does: with a tuple of maps."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> Any:
        return self.head((x,))


def _head_upsample(head: nn.Module, channels: int, hw: tuple[int, int]) -> float:
    """How much the head enlarges its input map (8 for three stride-2 deconvs)."""
    from adaptkit.core.probing import probe

    try:
        result = probe(_HeadOnTensor(head), (1, channels, hw[0], hw[1]))
    except AdaptkitError as exc:
        raise TargetError(f"cannot trace the head at {hw[0]}x{hw[1]}: {exc}") from None
    maps = [f for f in result.features if f.is_spatial and not f.is_input]
    if not maps:
        raise TargetError(f"head {type(head).__name__} returns no map; pass its target as a config (with its codec)")
    return 1.0 / maps[0].stride[0]


def target_from_head(
    head: nn.Module | Mapping[str, Any], heatmap_stride: float = DEFAULT_HEATMAP_STRIDE, **_: Any
) -> TargetSpec:
    """Trace a heatmap head alone: its in_channels, and the stride its input must have.

    A head that upsamples by ``u`` needs features at ``heatmap_stride * u``
    (HeatmapHead with three stride-2 deconvs: 4 * 8 = 32).
    """
    from adaptkit.mm.openmmlab import build_model

    module: nn.Module = build_model(head) if isinstance(head, Mapping) else head
    channels = getattr(module, "in_channels", None)
    if not isinstance(channels, int):
        raise TargetError(
            f"head {type(module).__name__} has no integer in_channels; pass the target as CHANNELS@STRIDE"
        )
    upsample = _head_upsample(module, channels, (16, 12))
    stride = exact(heatmap_stride * upsample)
    return TargetSpec.single(
        channels,
        (stride, stride),
        head_type=type(module).__name__,
        num_keypoints=_keypoints(module),
        head_upsample=exact(upsample),
        source=type(module).__name__,
    )
