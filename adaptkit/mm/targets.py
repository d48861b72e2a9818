"""What a head consumes, read from an mmpose/mmengine config or a head module.

A config's head is read from its own settings (in_channels, deconvs,
in_featuremap_size, stages and units), its codec (input and heatmap sizes)
and its stock neck, through ``HEAD_READERS``, one row per head type. The
stock backbone is built and probed only for a head type no row reads. The
head is then traced once at exactly the grid its codec implies, so a wrong
reading fails here rather than in training. ``parse_target`` is the one
door for every target form.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from adaptkit.core.records import InputSpec, Layout, Stride, TargetSpec
from adaptkit.core.targets import DEFAULT_HEATMAP_STRIDE, exact, is_spec, parse_spec_target
from adaptkit.errors import AdaptkitError, ConfigError, TargetError
from adaptkit.mm.config_values import config_int, config_pair, config_section

__all__ = [
    "HEAD_READERS",
    "KEPT_NECKS",
    "HeadReading",
    "parse_target",
    "read_head",
    "target_from_config",
    "target_from_head",
    "missing_package",
]

#: stock necks that stay after the adapter (the head reads what they make of a map)
KEPT_NECKS = ("GlobalAveragePooling",)

#: registry names that live outside mmpose, and the package that provides them
_FOREIGN_TYPES = {
    "CSPNeXt": "mmdet",
    "DeformConv2d": "full mmcv (with compiled ops; mmcv-lite has none)",
    "mmcv.ops": "full mmcv (with compiled ops; mmcv-lite has none)",
    "mmcv._ext": "full mmcv (with compiled ops; mmcv-lite has none)",
    "mmpretrain.": "mmpretrain",
    "mmcls.": "mmpretrain (the successor of mmcls)",
    "mmdet.": "mmdet",
}


def missing_package(cfg: Any, cause: str) -> str | None:
    """The package a config part needs but this install lacks, when the failure ``cause`` says so."""
    text = f"{cfg.get('type', '') if isinstance(cfg, Mapping) else ''} {cause}"
    for marker, package in _FOREIGN_TYPES.items():
        if marker in text and ("registry" in cause or "mmcv" in marker or "Deform" in marker or "No module" in cause):
            return package
    return None


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


# -- reading a head from its config -------------------------------------------------------------


@dataclass(frozen=True)
class HeadReading:
    """What one head config says it reads, before any tracing."""

    inputs: tuple[InputSpec, ...]
    groups: tuple[int, ...] | None
    featuremap_size: tuple[int, int] | None  # exact (width, height) grid of the last input
    head_upsample: float
    kept_neck: str | None
    heatmap_out: bool  # the head's first 4-D output must have the codec's heatmap size


class _Unreadable(Exception):
    """A head config lacks the fields a reader needs; carries their names."""

    def __init__(self, fields: Sequence[str]) -> None:
        super().__init__(", ".join(fields))
        self.fields = tuple(fields)


def _codec(cfg: Any) -> Mapping[str, Any] | None:
    """The training codec (``cfg.codec``; the last of a list), else the head's decoder."""
    codec = cfg.get("codec")
    if isinstance(codec, Sequence) and not isinstance(codec, (str, Mapping)) and codec:
        codec = codec[-1]
    if isinstance(codec, Mapping) and "input_size" in codec:
        return codec
    model = cfg.get("model")
    head = model.get("head") if isinstance(model, Mapping) else None
    decoder = head.get("decoder") if isinstance(head, Mapping) else None
    return decoder if isinstance(decoder, Mapping) and "input_size" in decoder else None


def _need(
    head: Mapping[str, Any],
    codec: Mapping[str, Any] | None,
    head_fields: Sequence[str],
    codec_fields: Sequence[str] = (),
) -> None:
    missing = [f"head.{f}" for f in head_fields if head.get(f) is None]
    missing += [f"codec.{f}" for f in codec_fields if codec is None or codec.get(f) is None]
    if missing:
        raise _Unreadable(missing)


def _pair(value: Any, key: str = "codec size") -> tuple[int, int]:
    return config_pair(value, key)


def _default(head_type: str, name: str) -> Any:
    """The head class's default for ``name`` (mmpose's, read from its signature)."""
    from adaptkit.mm.openmmlab import ensure_mmpose

    cls = ensure_mmpose().get(head_type)
    if cls is None:
        return None
    param = inspect.signature(cls.__init__).parameters.get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _deconvs(head: Mapping[str, Any]) -> int:
    """How many stride-2 deconvs the head runs before its final layer (mmpose's deconvs double)."""
    value = (
        head["deconv_out_channels"] if "deconv_out_channels" in head else _default(head["type"], "deconv_out_channels")
    )
    return len(value) if value else 0


def _grid_stride(input_size: tuple[int, int], grid: tuple[int, int]) -> Stride:
    """(height, width) stride of a (width, height) grid at a (width, height) input."""
    return (exact(input_size[1] / grid[1]), exact(input_size[0] / grid[0]))


def _shrink(size: tuple[int, int], factor: int, head: Mapping[str, Any]) -> tuple[int, int]:
    if size[0] % factor or size[1] % factor:
        raise _Unreadable([f"head.deconv_out_channels ({size[0]}x{size[1]} heatmaps are not {factor}x a whole grid)"])
    return (size[0] // factor, size[1] // factor)


def _heatmap_grid(head: Mapping[str, Any], codec: Mapping[str, Any] | None) -> tuple[Stride, int]:
    """The (height, width) stride of the map a deconv head reads, and the head's upsampling."""
    _need(head, codec, (), ("input_size", "heatmap_size"))
    assert codec is not None  # _need checked it
    up = 2 ** _deconvs(head)
    return _grid_stride(
        _pair(codec["input_size"], "codec.input_size"),
        _shrink(_pair(codec["heatmap_size"], "codec.heatmap_size"), up, head),
    ), up


def _read_heatmap(head: Mapping[str, Any], codec: Mapping[str, Any] | None, neck: str | None) -> HeadReading:
    _need(head, codec, ("in_channels",))
    stride, up = _heatmap_grid(head, codec)
    spec = InputSpec(
        channels=config_int(head["in_channels"], "model.head.in_channels"), stride=stride, layout=Layout.NCHW
    )
    return HeadReading((spec,), None, None, up, None, True)


def _read_cpm(head: Mapping[str, Any], codec: Mapping[str, Any] | None, neck: str | None) -> HeadReading:
    _need(head, codec, ("in_channels", "num_stages"))
    stride, up = _heatmap_grid(head, codec)
    spec = InputSpec(
        channels=config_int(head["in_channels"], "model.head.in_channels"), stride=stride, layout=Layout.NCHW
    )
    return HeadReading((spec,) * config_int(head["num_stages"], "model.head.num_stages"), None, None, up, None, True)


def _read_mspn(head: Mapping[str, Any], codec: Mapping[str, Any] | None, neck: str | None) -> HeadReading:
    """Stages of units; each stage's units run from the coarsest (heatmap stride x 2^(units-1)) to the heatmap's."""
    _need(head, codec, ("num_stages", "num_units", "unit_channels"), ("input_size", "heatmap_size"))
    assert codec is not None
    stages, units = (
        config_int(head["num_stages"], "model.head.num_stages"),
        config_int(head["num_units"], "model.head.num_units"),
    )
    size, heatmap = _pair(codec["input_size"], "codec.input_size"), _pair(codec["heatmap_size"], "codec.heatmap_size")
    per_stage = []
    for j in range(units):
        grid = _shrink(heatmap, 2 ** (units - 1 - j), head)
        per_stage.append(
            InputSpec(
                channels=config_int(head["unit_channels"], "model.head.unit_channels"),
                stride=_grid_stride(size, grid),
                layout=Layout.NCHW,
            )
        )
    return HeadReading(tuple(per_stage) * stages, (units,) * stages, None, 1, None, True)


def _read_featuremap(head: Mapping[str, Any], codec: Mapping[str, Any] | None, neck: str | None) -> HeadReading:
    """SimCC, RTMCC, DSNT/IPR: the flattened grid is fixed by ``in_featuremap_size``."""
    _need(head, codec, ("in_channels", "in_featuremap_size"))
    size = _pair(codec["input_size"], "codec.input_size") if codec is not None else None
    if size is None and head.get("input_size") is not None:
        size = _pair(head["input_size"], "model.head.input_size")
    if size is None:
        raise _Unreadable(["codec.input_size"])
    grid = _pair(head["in_featuremap_size"], "model.head.in_featuremap_size")
    up = 2 ** _deconvs(head) if head["type"] != "RTMCCHead" else 1
    spec = InputSpec(
        channels=config_int(head["in_channels"], "model.head.in_channels"),
        stride=_grid_stride(size, grid),
        layout=Layout.NCHW,
    )
    return HeadReading((spec,), None, grid, up, None, False)


def _read_pooled(head: Mapping[str, Any], codec: Mapping[str, Any] | None, neck: str | None) -> HeadReading:
    """Regression heads read a vector that the stock GlobalAveragePooling neck makes of a map."""
    _need(head, codec, ("in_channels",))
    if neck not in KEPT_NECKS:
        raise TargetError(
            f"{head['type']} reads a vector and its config has no GlobalAveragePooling neck (neck: {neck}); "
            "adaptkit adapts maps: add neck=dict(type='GlobalAveragePooling') to the config"
        )
    spec = InputSpec(
        channels=config_int(head["in_channels"], "model.head.in_channels"), stride=None, layout=Layout.NCHW
    )
    return HeadReading((spec,), None, None, 1, neck, False)


def _read_bottomup(head: Mapping[str, Any], codec: Mapping[str, Any] | None, neck: str | None) -> HeadReading:
    """CID and DEKR read one map at the heatmap's stride (the stock neck concatenates HRNet's branches there)."""
    _need(head, codec, ("in_channels",), ("input_size", "heatmap_size"))
    assert codec is not None
    spec = InputSpec(
        channels=config_int(head["in_channels"], "model.head.in_channels"),
        stride=_grid_stride(
            _pair(codec["input_size"], "codec.input_size"), _pair(codec["heatmap_size"], "codec.heatmap_size")
        ),
        layout=Layout.NCHW,
    )
    return HeadReading((spec,), None, None, 1, None, False)


def _refuse_lifting(head: Mapping[str, Any], codec: Mapping[str, Any] | None, neck: str | None) -> HeadReading:
    raise TargetError(
        f"{head['type']} is a 3D pose-lifting head: it consumes 2D keypoint sequences, not an image backbone's "
        "feature maps, so there is no backbone for adaptkit to adapt"
    )


Reader = Callable[[Mapping[str, Any], "Mapping[str, Any] | None", "str | None"], HeadReading]

#: head type -> how to read what it consumes from its config, the codec and the stock neck's type
HEAD_READERS: dict[str, Reader] = {
    "HeatmapHead": _read_heatmap,
    "ViPNASHead": _read_heatmap,
    "AssociativeEmbeddingHead": _read_heatmap,
    "CPMHead": _read_cpm,
    "MSPNHead": _read_mspn,
    "SimCCHead": _read_featuremap,
    "RTMCCHead": _read_featuremap,
    "DSNTHead": _read_featuremap,
    "IntegralRegressionHead": _read_featuremap,
    "RegressionHead": _read_pooled,
    "RLEHead": _read_pooled,
    "CIDHead": _read_bottomup,
    "DEKRHead": _read_bottomup,
    "TemporalRegressionHead": _refuse_lifting,
    "TrajectoryRegressionHead": _refuse_lifting,
}


def read_head(head: Mapping[str, Any], codec: Mapping[str, Any] | None, neck: Mapping[str, Any] | None) -> HeadReading:
    """What ``head`` consumes, from its config, the codec and the stock neck; TargetError when unreadable.

    Pure over plain dicts, except for mmpose's defaults of fields the config leaves out.
    """
    head_type = str(head.get("type"))
    reader = HEAD_READERS.get(head_type)
    neck_type = str(neck.get("type")) if isinstance(neck, Mapping) else None
    if reader is None:
        raise _Unreadable(["type: not a head type adaptkit reads"])
    return reader(head, codec, neck_type)


def _head_build_error(head_type: str, exc: ConfigError, cfg: Any) -> TargetError:
    package = missing_package(cfg, str(exc))
    if package is not None:
        return TargetError(f"{head_type} cannot be built here: it needs {package}, which is not installed")
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
        _refuse_lifting(head_cfg, None, None)
    codec = _codec(cfg)
    neck_cfg = model_cfg.get("neck")
    scoped = package_scoped_name(config_path(name))
    try:
        reading = read_head(head_cfg, codec, neck_cfg)
    except _Unreadable as exc:
        return _target_from_stock(name, cfg, head_cfg, codec, exc.fields, scoped)
    if codec is None:
        raise TargetError(f"config {name!r} names no codec input_size; pass the target as CHANNELS@STRIDE instead")
    try:
        head = build_model(head_cfg)
        neck = build_model(neck_cfg) if reading.kept_neck is not None else None
    except ConfigError as exc:
        raise _head_build_error(head_type, exc, head_cfg) from None
    heatmap = _pair(codec["heatmap_size"], "codec.heatmap_size") if "heatmap_size" in codec else None
    target = TargetSpec(
        inputs=reading.inputs,
        groups=reading.groups,
        head_type=head_type,
        num_keypoints=_keypoints(head, head_cfg),
        heatmap_size=heatmap,
        input_size=_pair(codec["input_size"], "codec.input_size"),
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
    width, height = _pair(codec["input_size"], "codec.input_size")
    try:
        body = ConfigBackbone(
            build_model(model_cfg["backbone"]), build_model(model_cfg["neck"]) if model_cfg.get("neck") else None
        )
    except ConfigError as exc:
        package = missing_package(model_cfg["backbone"], str(exc))
        why = f"its stock backbone needs {package}" if package else f"its stock backbone cannot be built ({exc})"
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
    heatmap = _pair(codec["heatmap_size"], "codec.heatmap_size") if "heatmap_size" in codec else None
    upsample = 1.0
    if heatmap is not None and read.spatial is not None:
        try:
            head = build_model(head_cfg)
        except ConfigError as exc:
            raise _head_build_error(head_type, exc, head_cfg) from None
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
