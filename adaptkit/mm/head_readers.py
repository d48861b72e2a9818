"""Read what a head consumes from its own config: one reader per head type (``HEAD_READERS``).

Pure over plain config dicts (in_channels, deconvs, in_featuremap_size,
stages and units, the codec's sizes, the stock neck's type), except for
mmpose's own defaults of fields a config leaves out. A new head type is a
row here plus its tests; ``adaptkit.mm.targets`` traces the head to check
the reading.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adaptkit.core.records import InputSpec, Layout, Stride
from adaptkit.core.targets import exact
from adaptkit.errors import TargetError
from adaptkit.mm.config_values import config_int, config_pair

__all__ = [
    "HEAD_READERS",
    "KEPT_NECKS",
    "HeadReading",
    "Unreadable",
    "codec_of",
    "read_head",
    "refuse_lifting",
    "size_pair",
]

#: stock necks that stay after the adapter (the head reads what they make of a map)
KEPT_NECKS = ("GlobalAveragePooling",)


@dataclass(frozen=True)
class HeadReading:
    """What one head config says it reads, before any tracing."""

    inputs: tuple[InputSpec, ...]
    groups: tuple[int, ...] | None
    featuremap_size: tuple[int, int] | None  # exact (width, height) grid of the last input
    head_upsample: float
    kept_neck: str | None
    heatmap_out: bool  # the head's first 4-D output must have the codec's heatmap size


class Unreadable(Exception):
    """A head config lacks the fields a reader needs; carries their names."""

    def __init__(self, fields: Sequence[str]) -> None:
        super().__init__(", ".join(fields))
        self.fields = tuple(fields)


def codec_of(cfg: Any) -> Mapping[str, Any] | None:
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
        raise Unreadable(missing)


def size_pair(value: Any, key: str = "codec size") -> tuple[int, int]:
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
    """A (width, height) heatmap size divided by a deconv head's upsampling; unreadable when not whole."""
    if size[0] % factor or size[1] % factor:
        raise Unreadable([f"head.deconv_out_channels ({size[0]}x{size[1]} heatmaps are not {factor}x a whole grid)"])
    return (size[0] // factor, size[1] // factor)


def _heatmap_grid(head: Mapping[str, Any], codec: Mapping[str, Any] | None) -> tuple[Stride, int]:
    """The (height, width) stride of the map a deconv head reads, and the head's upsampling."""
    _need(head, codec, (), ("input_size", "heatmap_size"))
    assert codec is not None  # _need checked it
    up = 2 ** _deconvs(head)
    return _grid_stride(
        size_pair(codec["input_size"], "codec.input_size"),
        _shrink(size_pair(codec["heatmap_size"], "codec.heatmap_size"), up, head),
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
    size, heatmap = (
        size_pair(codec["input_size"], "codec.input_size"),
        size_pair(codec["heatmap_size"], "codec.heatmap_size"),
    )
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
    size = size_pair(codec["input_size"], "codec.input_size") if codec is not None else None
    if size is None and head.get("input_size") is not None:
        size = size_pair(head["input_size"], "model.head.input_size")
    if size is None:
        raise Unreadable(["codec.input_size"])
    grid = size_pair(head["in_featuremap_size"], "model.head.in_featuremap_size")
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
            size_pair(codec["input_size"], "codec.input_size"), size_pair(codec["heatmap_size"], "codec.heatmap_size")
        ),
        layout=Layout.NCHW,
    )
    return HeadReading((spec,), None, None, 1, None, False)


def refuse_lifting(head: Mapping[str, Any], codec: Mapping[str, Any] | None, neck: str | None) -> HeadReading:
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
    "TemporalRegressionHead": refuse_lifting,
    "TrajectoryRegressionHead": refuse_lifting,
}


def read_head(head: Mapping[str, Any], codec: Mapping[str, Any] | None, neck: Mapping[str, Any] | None) -> HeadReading:
    """What ``head`` consumes, from its config, the codec and the stock neck; TargetError when unreadable.

    Pure over plain dicts, except for mmpose's defaults of fields the config leaves out.
    """
    head_type = str(head.get("type"))
    reader = HEAD_READERS.get(head_type)
    neck_type = str(neck.get("type")) if isinstance(neck, Mapping) else None
    if reader is None:
        raise Unreadable(["type: not a head type adaptkit reads"])
    return reader(head, codec, neck_type)
