"""What fuse will do, decided before any weight is touched: pure analysis of adapter + head.

Reads the head's layers, models their multiply-accumulate cost, and decides
where the projection folds, which BatchNorms fold, and where the resize goes
(``plan_fusion`` -> ``FusionPlan``). Anything it cannot do exactly it
refuses with ``FuseError`` naming the reason.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import torch.nn as nn

from adaptkit.core.adapter import ShapeAdapter
from adaptkit.core.fused_modules import AdaptedHead, FusedChain, FusedConv, Pointwise, is_heatmap_head
from adaptkit.errors import FuseError

__all__ = [
    "FusionPlan",
    "plan_fusion",
    "RESIZE_COST",
    "Parts",
    "Decision",
    "find_parts",
    "decide",
    "plain_conv",
    "is_pointwise",
    "needs_bias_map",
]

#: multiply-accumulate equivalents per value a bilinear resize writes (4 taps, memory bound)
RESIZE_COST = 8.0


# ---------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class FusionPlan:
    """What ``fuse`` does to one adapter + head, and what it saves.

    Costs are multiply-accumulates per pixel of the adapter's input feature
    for one image, over the adapter and the head layers fuse models.
    """

    head: str  # the head's class name
    fold_into: str | None  # the head layer the projection is folded into; None when kept or absent
    projection: str  # "folded", "kept" or "none"
    bias_map: bool  # the projection bias is carried as a per-size map (zero padding or a transposed conv)
    resize: str | None  # where the resize runs in the fused chain ("before X", "after X"); None without one
    batchnorms_folded: tuple[str, ...]
    layers: tuple[str, ...]  # the fused chain, in order
    macs_before: float
    macs_after: float
    reasons: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# layer analysis


def _conv_forwards() -> tuple[Callable[..., Any], ...]:
    """Forwards with torch's conv math: torch's own, and mmcv's empty-tensor wrappers when loaded."""
    forwards: list[Callable[..., Any]] = [nn.Conv2d.forward, nn.ConvTranspose2d.forward]
    wrappers = sys.modules.get("mmcv.cnn.bricks.wrappers")
    for name in ("Conv2d", "ConvTranspose2d"):
        cls = getattr(wrappers, name, None)
        if cls is not None:
            forwards.append(cls.forward)
    return tuple(forwards)


def plain_conv(m: nn.Module) -> nn.Conv2d | nn.ConvTranspose2d | None:
    """The conv whose math fuse may rewrite (a FusedConv's, or a conv with torch's conv math)."""
    if isinstance(m, (FusedConv, Pointwise)):
        return m.conv
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and type(m).forward in _conv_forwards():
        return m
    return None


def _is_eval_bn(m: nn.Module) -> TypeGuard[nn.BatchNorm2d]:
    """A BatchNorm2d that, in eval mode, is a fixed per-channel affine map."""
    return (
        isinstance(m, nn.BatchNorm2d)
        and type(m).forward is nn.BatchNorm2d.forward
        and m.track_running_stats
        and m.running_mean is not None
        and m.running_var is not None
    )


def _is_dropped(m: nn.Module) -> bool:
    """Layers that are the identity in eval mode."""
    return type(m) in (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.Dropout3d, nn.AlphaDropout)


def is_pointwise(m: nn.Module) -> bool:
    """Per-pixel linear maps, which commute with a bilinear resize."""
    if _is_eval_bn(m):
        return True
    conv = plain_conv(m)
    if conv is None or isinstance(conv, nn.ConvTranspose2d):
        return False
    if isinstance(m, FusedConv) and m.bias_kernel is not None:
        return False
    return tuple(conv.kernel_size) == (1, 1) and tuple(conv.stride) == (1, 1) and conv.padding in ((0, 0), "valid")


def _flatten(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """Leaf layers of nested nn.Sequential containers, named by their path in the head."""
    if type(module) is nn.Sequential or isinstance(module, FusedChain):
        for name, child in module.named_children():
            yield from _flatten(child, f"{prefix}.{name}" if prefix else name)
        return
    if _is_dropped(module):
        return
    yield prefix or "0", module


def _head_layers(head: nn.Module) -> list[tuple[str, nn.Module]]:
    if is_heatmap_head(head):
        layers: list[tuple[str, nn.Module]] = []
        for slot in ("deconv_layers", "conv_layers", "final_layer"):
            layers.extend(_flatten(getattr(head, slot), slot))
        return layers
    if type(head) is nn.Sequential or isinstance(head, FusedChain):
        return list(_flatten(head, ""))
    raise FuseError(
        f"fuse does not know the head {type(head).__name__}; it fuses mmpose HeatmapHead (and heads sharing its forward) "
        "or an nn.Sequential of layers"
    )


# ---------------------------------------------------------------------------------------------
# cost model


@dataclass(frozen=True)
class _Cost:
    """A layer as the cost model sees it: channels in/out, MACs per input pixel, area scale."""

    cin: int | None
    cout: int | None
    macs_per_px: float
    area_scale: float


def _cost(m: nn.Module, cin_override: int | None = None) -> _Cost:
    conv = plain_conv(m)
    if conv is not None:
        cin = cin_override if cin_override is not None else conv.in_channels
        groups = 1 if cin_override is not None else conv.groups
        taps = conv.kernel_size[0] * conv.kernel_size[1]
        if isinstance(conv, nn.ConvTranspose2d):
            scale = float(conv.stride[0] * conv.stride[1])
            return _Cost(cin, conv.out_channels, cin * conv.out_channels / groups * taps, scale)
        scale = 1.0 / (conv.stride[0] * conv.stride[1])
        return _Cost(cin, conv.out_channels, cin * conv.out_channels / groups * taps * scale, scale)
    if _is_eval_bn(m):
        return _Cost(m.num_features, m.num_features, 2.0 * m.num_features, 1.0)
    return _Cost(None, None, 0.0, 1.0)  # not modelled: free, channel- and size-preserving


def _chain_cost(costs: Sequence[_Cost], channels: int, resize_at: int | None, ratio: float) -> float:
    """MACs per feature pixel of a chain with the resize before ``costs[resize_at]`` (None: no resize)."""
    total, area = 0.0, 1.0
    for i, cost in enumerate([*costs, None]):
        if resize_at == i:
            total += channels * ratio * RESIZE_COST
            area *= ratio
        if cost is None:
            break
        total += cost.macs_per_px * area
        area *= cost.area_scale
        channels = cost.cout if cost.cout is not None else channels
    return total


# ---------------------------------------------------------------------------------------------
# planning


@dataclass(frozen=True)
class Parts:
    adapter: ShapeAdapter
    head: nn.Module
    layers: tuple[tuple[str, nn.Module], ...]


def find_parts(model: Any) -> Parts:
    """Find the adaptkit adapter and the head in what ``fuse`` was given."""
    if isinstance(model, tuple) and len(model) == 2:
        adapter, head = model
    elif isinstance(model, AdaptedHead):
        adapter, head = model.neck, model.head
    elif isinstance(model, nn.Module) and isinstance(getattr(model, "neck", None), nn.Module):
        adapter, head = model.neck, getattr(model, "head", None)
        if not isinstance(head, nn.Module):
            raise FuseError(f"{type(model).__name__} has no head to fold the adapter into; fuse needs neck and head")
    elif isinstance(model, nn.Module):
        raise FuseError(
            f"no adaptkit adapter in {type(model).__name__}: fuse takes an mmpose estimator whose neck is a "
            "ShapeAdapter (build it from an 'adaptkit wrap' fragment), an AdaptedHead, or an (adapter, head) pair"
        )
    else:
        raise FuseError(f"fuse takes a model or an (adapter, head) pair, got {type(model).__name__}")
    if isinstance(adapter, nn.Module) and type(adapter).__name__ in (
        "MultiShapeAdapter",
        "ScaleFusionAdapter",
        "AdapterThenNeck",
    ):
        raise FuseError(
            f"fuse cannot fold the adapter into {type(head).__name__}: its {type(adapter).__name__} feeds "
            "several maps, merges several scales or feeds a stock neck, and fuse folds one ShapeAdapter "
            "into a HeatmapHead; keep the adapter unfused"
        )
    if not isinstance(adapter, ShapeAdapter):
        raise FuseError(
            f"the neck is {type(adapter).__name__}, not an adaptkit ShapeAdapter; only adaptkit's adapter can be fused"
        )
    if not isinstance(head, nn.Module):
        raise FuseError(f"the head must be an nn.Module, got {type(head).__name__}")
    return Parts(adapter, head, tuple(_head_layers(head)))


def _bn_pairs(layers: Sequence[tuple[str, nn.Module]]) -> list[int]:
    """Indices of eval BatchNorms that directly follow a conv they can fold into."""
    pairs: list[int] = []
    for i in range(1, len(layers)):
        conv = plain_conv(layers[i - 1][1])
        if conv is None or not _is_eval_bn(layers[i][1]) or conv.out_channels != layers[i][1].num_features:
            continue
        if isinstance(conv, nn.ConvTranspose2d) and conv.groups != 1:
            continue
        if pairs and pairs[-1] == i - 1:
            continue
        pairs.append(i)
    return pairs


@dataclass(frozen=True)
class Decision:
    plan: FusionPlan
    fold: bool
    resize_at: int | None  # index in the fused chain, before which the resize runs
    bn: tuple[int, ...]  # head-layer indices of BatchNorms folded into the conv before them


def _fold_blocker(adapter: ShapeAdapter, first: nn.Module | None) -> str | None:
    """Why the projection cannot fold into the head's first layer (None when it can)."""
    if first is None:
        return "the head has no layer to fold into"
    conv = plain_conv(first)
    if conv is None:
        return f"the head starts with {type(first).__name__}, not a conv"
    if isinstance(first, FusedConv) and first.bias_kernel is not None:
        return "the head's first layer already carries a bias map"
    if conv.groups != 1:
        return f"the head's first conv is grouped (groups={conv.groups})"
    if conv.in_channels != adapter.out_channels:
        raise FuseError(
            f"the adapter gives {adapter.out_channels} channels but the head's first layer takes {conv.in_channels}; "
            "the model does not run as it is"
        )
    return None


def decide(parts: Parts) -> Decision:
    adapter, raw = parts.adapter, parts.layers
    bn = _bn_pairs(raw)
    folded_bn = set(bn)
    layers = [(name, m) for i, (name, m) in enumerate(raw) if i not in folded_bn]  # BN folded into the conv before
    names = [name for name, _ in layers]
    has_proj = adapter.proj is not None
    ratio = 1.0
    if adapter.resizes:
        ratio = (adapter.feature_stride[0] / adapter.target_stride[0]) * (
            adapter.feature_stride[1] / adapter.target_stride[1]
        )
    reasons: list[str] = []

    # before: the adapter's own order, then the head as it is (BatchNorm unfolded)
    before = [_cost(m) for _, m in raw]
    proj_cost = _Cost(adapter.in_channels, adapter.out_channels, float(adapter.in_channels * adapter.out_channels), 1.0)
    if has_proj:
        before.insert(0, proj_cost)
    resize_before = None
    if adapter.resizes:
        resize_before = 1 if (has_proj and adapter.project_first) else 0
    macs_before = _chain_cost(before, adapter.in_channels, resize_before, ratio)

    blocker = _fold_blocker(adapter, layers[0][1] if layers else None) if has_proj else "no projection"
    options: list[tuple[float, bool, int | None]] = []
    for fold in (True, False) if blocker is None else (False,):
        if fold:
            costs = [_cost(layers[0][1], cin_override=adapter.in_channels)] + [_cost(m) for _, m in layers[1:]]
            chain_mods = [m for _, m in layers]
        else:
            costs = ([proj_cost] if has_proj else []) + [_cost(m) for _, m in layers]
            chain_mods = ([adapter.proj] if adapter.proj is not None else []) + [m for _, m in layers]
        if not adapter.resizes:
            options.append((_chain_cost(costs, adapter.in_channels, None, ratio), fold, None))
            continue
        limit = 0  # the resize may run before any layer up to and including the first non-pointwise one
        while limit < len(chain_mods) and _pointwise_after_fold(chain_mods[limit], fold and limit == 0):
            limit += 1
        for at in range(limit + 1):
            options.append((_chain_cost(costs, adapter.in_channels, at, ratio), fold, at))
    # cheapest first; on a tie prefer folding (fewer layers) and the later resize (fewer values moved)
    cost, fold, resize_at = min(options, key=lambda o: (o[0], not o[1], -(o[2] or 0)))

    chain_names = ([] if fold or not has_proj else ["proj"]) + names
    if fold:
        chain_names[0] = f"{names[0]}+proj"
    bias_map = False
    if fold:
        bias_map = needs_bias_map(plain_conv(layers[0][1]))  # type: ignore[arg-type]
        reasons.append(f"the 1x1 projection {adapter.in_channels}->{adapter.out_channels} folds into {names[0]}")
        if bias_map:
            reasons.append("its bias varies near the borders there (zero padding or transposed conv): exact bias map")
    elif has_proj:
        kept_why = blocker or "folding would cost more than it saves"
        reasons.append(f"the projection stays a separate 1x1 conv: {kept_why}")
    resize_where = None
    if resize_at is not None:
        chain_names.insert(resize_at, "resize")
        if resize_at + 1 < len(chain_names):
            resize_where = f"before {chain_names[resize_at + 1]}"
        else:
            resize_where = f"after {chain_names[resize_at - 1]}" if resize_at else "alone"
        reasons.append(f"the resize runs {resize_where}: the cheapest place it can take exactly")
    bn_names = tuple(raw[i][0] for i in bn)
    if bn_names:
        reasons.append(f"{len(bn_names)} BatchNorm layer(s) fold into the conv before them")
    plan = FusionPlan(
        head=type(parts.head).__name__,
        fold_into=names[0] if fold else None,
        projection="folded" if fold else ("kept" if has_proj else "none"),
        bias_map=bias_map,
        resize=resize_where,
        batchnorms_folded=bn_names,
        layers=tuple(chain_names),
        macs_before=macs_before,
        macs_after=cost,
        reasons=tuple(reasons),
    )
    return Decision(plan, fold, resize_at, tuple(bn))


def _pointwise_after_fold(m: nn.Module, folded_here: bool) -> bool:
    """Whether the resize may pass ``m``; a layer that takes the folded projection must stay pointwise."""
    if folded_here:
        conv = plain_conv(m)
        return conv is not None and is_pointwise(m) and not needs_bias_map(conv)
    return is_pointwise(m)


def needs_bias_map(conv: nn.Conv2d | nn.ConvTranspose2d) -> bool:
    """Whether a bias pushed through ``conv`` varies with position (zero padding, transposed conv)."""
    if isinstance(conv, nn.ConvTranspose2d):
        return True
    if conv.padding_mode != "zeros" or conv.padding == "valid":
        return False
    if isinstance(conv.padding, str):  # "same"
        return any(k > 1 for k in conv.kernel_size)
    return any(p > 0 for p in conv.padding)


def plan_fusion(model: Any) -> FusionPlan:
    """What ``fuse`` would do to ``model`` (same inputs as ``fuse``); changes nothing.

    Raises FuseError when the model cannot be fused exactly.
    """
    return decide(find_parts(model)).plan
