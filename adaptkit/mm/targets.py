"""What a head consumes, read from an mmpose/mmengine config or a head module.

A config's own backbone and neck are probed at the codec's input size (the
way a person re-runs the stock config); a head alone is traced to learn its
own upsampling. ``parse_target`` is the one door for every target form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from adaptkit.core.records import Layout, TargetSpec
from adaptkit.core.targets import DEFAULT_HEATMAP_STRIDE, exact, is_spec, parse_spec_target
from adaptkit.errors import AdaptkitError, TargetError

__all__ = ["parse_target", "target_from_config", "target_from_head"]


def parse_target(target: Any, **options: Any) -> TargetSpec:
    """Any supported target form -> TargetSpec; TargetError when it cannot be read."""
    if isinstance(target, nn.Module):
        return target_from_head(target, **options)
    if isinstance(target, Mapping) and "type" in target:  # a head config
        return target_from_head(target, **options)
    if isinstance(target, str) and not is_spec(target):
        text = target.strip()
        if text.endswith(".py") or "::" in text:
            return target_from_config(text, **options)
    if not isinstance(target, (TargetSpec, str, Mapping)):
        raise TargetError(
            f"a target is a TargetSpec, a 'CHANNELS@STRIDE' string, a config path or a head; got {type(target).__name__}"
        )
    return parse_spec_target(target)


def _codec(cfg: Any) -> Mapping[str, Any] | None:
    codec = cfg.get("codec")
    if isinstance(codec, Mapping) and "input_size" in codec:
        return codec
    head = cfg.get("model", {}).get("head", {})
    decoder = head.get("decoder") if isinstance(head, Mapping) else None
    return decoder if isinstance(decoder, Mapping) and "input_size" in decoder else None


def target_from_config(name: str, **_: Any) -> TargetSpec:
    """Probe a config's own backbone (+neck) at its codec's input size, and read its head.

    The head's ``in_channels`` must match the probed feature, and the head
    traced on that feature must produce the codec's heatmap size.
    """
    from adaptkit.core.probing import probe
    from adaptkit.mm.openmmlab import ConfigBackbone, build_model, config_path, load_config, package_scoped_name

    cfg = load_config(name)
    model_cfg = cfg.get("model")
    if not isinstance(model_cfg, Mapping) or "backbone" not in model_cfg or "head" not in model_cfg:
        raise TargetError(f"config {name!r} has no model.backbone and model.head; give a top-down estimator config")
    codec = _codec(cfg)
    if codec is None:
        raise TargetError(f"config {name!r} names no codec input_size; pass the target as CHANNELS@STRIDE instead")
    width, height = (int(v) for v in codec["input_size"])
    body = ConfigBackbone(
        build_model(model_cfg["backbone"]), build_model(model_cfg["neck"]) if model_cfg.get("neck") else None
    )
    try:
        result = probe(body, (2, 3, height, width))
    except AdaptkitError as exc:
        raise TargetError(f"cannot probe the backbone of config {name!r}: {exc}") from None
    maps = [f for f in result.features if f.is_spatial and not f.is_input]
    if not maps:
        raise TargetError(f"the backbone of config {name!r} returns no feature map")
    read = maps[-1]  # mmpose heads read feats[-1]
    head_cfg = dict(model_cfg["head"])
    in_channels = head_cfg.get("in_channels")
    if in_channels is not None and int(in_channels) != read.channels:
        raise TargetError(
            f"config {name!r} is inconsistent: its head expects {in_channels} channels but its backbone gives {read.channels}"
        )
    head = build_model(head_cfg)
    upsample = _head_upsample(head, read.channels, read.spatial or (height // 4, width // 4))
    heatmap_size = tuple(int(v) for v in codec["heatmap_size"]) if "heatmap_size" in codec else None
    if heatmap_size is not None and read.spatial is not None:
        produced = (round(read.spatial[1] * upsample), round(read.spatial[0] * upsample))
        if produced != heatmap_size:
            raise TargetError(
                f"config {name!r}: its head produces {produced[0]}x{produced[1]} heatmaps but the codec wants "
                f"{heatmap_size[0]}x{heatmap_size[1]} (width x height)"
            )
    scoped = package_scoped_name(config_path(name))
    return TargetSpec(
        channels=read.channels,
        stride=(exact(read.stride[0]), exact(read.stride[1])),
        layout=Layout.NCHW,
        num_inputs=1,
        read_index=-1,
        head_type=str(head_cfg.get("type")),
        num_keypoints=_keypoints(head),
        heatmap_size=heatmap_size,  # type: ignore[arg-type]
        input_size=(width, height),
        head_upsample=exact(upsample),  # type: ignore[arg-type]
        source=name,
        config=scoped or str(config_path(name).resolve()),
    )


def _keypoints(head: nn.Module) -> int | None:
    out = getattr(head, "out_channels", None)
    return int(out) if isinstance(out, int) else None


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
        result = probe(_HeadOnTensor(head), (1, channels, max(hw[0], 8), max(hw[1], 8)))
    except AdaptkitError as exc:
        raise TargetError(f"cannot trace the head: {exc}") from None
    maps = [f for f in result.features if f.is_spatial and not f.is_input]
    if not maps:
        raise TargetError("the head returns no map; adaptkit reads heatmap heads")
    return 1.0 / maps[0].stride[0]


def target_from_head(
    head: nn.Module | Mapping[str, Any], heatmap_stride: float = DEFAULT_HEATMAP_STRIDE, **_: Any
) -> TargetSpec:
    """Trace a head alone: its in_channels, and the stride its input must have.

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
    return TargetSpec(
        channels=channels,
        stride=(stride, stride),
        head_type=type(module).__name__,
        num_keypoints=_keypoints(module),
        head_upsample=exact(upsample),  # type: ignore[arg-type]
        source=type(module).__name__,
    )
