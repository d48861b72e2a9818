"""Fuse stage: an inference copy of adapter + head with the adapter folded away.

The adapter is linear: a 1x1 projection and a bilinear resize, which
commute exactly (bilinear weights sum to 1, so the bias survives). That
leaves room to

* fold the projection into the head's first conv or transposed conv
  (weights composed; the projection's bias carried exactly, as a per-size
  bias map wherever zero padding or a transposed conv makes it vary near the
  borders),
* fold eval-mode BatchNorm into the conv before it,
* move the resize to the cheapest exact place: past the head's pointwise
  linear layers (1x1 convs, folded BatchNorm), never past a nonlinearity, a
  spatial or strided layer, or a layer fuse does not model.

The choices come from a small multiply-accumulate cost model
(``plan_fusion``), so a fold that would cost more than it saves is not made.
On the CPU the fused chain also takes faster kernels for the same math:
1x1 convs as one batched matrix product on NCHW maps (``Pointwise``), and
bilinear resizes through a channels-last copy (``Resize``).
``fuse`` returns a deep copy in eval mode; the model it is given is never
changed. Everything fuse cannot do exactly raises ``FuseError``.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import torch
import torch.nn as nn
import torch.nn.functional as F

from adaptkit.core.adapter import ShapeAdapter, resize_to, target_size
from adaptkit.errors import FuseError

__all__ = [
    "fuse",
    "plan_fusion",
    "FusionPlan",
    "AdaptedHead",
    "FusedConv",
    "Resize",
    "Pointwise",
    "FusedChain",
    "CompileGuard",
]

#: multiply-accumulate equivalents per value a bilinear resize writes (4 taps, memory bound)
RESIZE_COST = 8.0
_MAP_CACHE_SIZE = 8


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
# modules the fused model is made of


class FusedConv(nn.Module):
    """A conv (or transposed conv) with a projection folded in whose bias varies near the borders.

    Zero padding, or a transposed conv, lets fewer taps reach border pixels,
    so the projection's bias is not a constant per output channel there.
    ``bias_kernel`` (the conv's kernel summed against that bias) run with
    the layer's own geometry on a map of ones of the input's size gives the
    exact bias map. Maps are cached per input size (not while tracing or
    compiling). Folds with a constant bias are plain convs instead.
    """

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d, bias_kernel: torch.Tensor | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.bias_kernel: torch.Tensor | None
        self.register_buffer("bias_kernel", bias_kernel)
        self._maps: dict[tuple[Any, ...], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.bias_kernel is not None:
            y = y + self.bias_map((x.shape[-2], x.shape[-1]), y.dtype)
        return y

    def bias_map(self, hw: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """The folded bias for an input of spatial size ``hw``, shaped (1, C, H', W')."""
        kernel = self.bias_kernel
        assert kernel is not None  # only called when there is one
        key = (int(hw[0]), int(hw[1]), kernel.device, dtype, kernel.data_ptr(), kernel._version)
        cacheable = not (_is_compiling() or torch.jit.is_tracing())
        if cacheable and key in self._maps:
            return self._maps[key]
        ones = torch.ones((1, 1, int(hw[0]), int(hw[1])), device=kernel.device, dtype=kernel.dtype)
        conv = self.conv
        with torch.autocast(kernel.device.type, enabled=False):
            if isinstance(conv, nn.ConvTranspose2d):
                padding: Any = conv.padding  # always a tuple for a transposed conv
                out = F.conv_transpose2d(
                    ones, kernel, None, conv.stride, padding, conv.output_padding, 1, conv.dilation
                )
            else:
                out = F.conv2d(ones, kernel, None, conv.stride, conv.padding, conv.dilation, 1)
        out = out.to(dtype)
        if cacheable:
            if len(self._maps) >= _MAP_CACHE_SIZE:
                self._maps.pop(next(iter(self._maps)))
            self._maps[key] = out
        return out

    def __deepcopy__(self, memo: dict[int, Any]) -> FusedConv:
        new = FusedConv(copy.deepcopy(self.conv, memo), copy.deepcopy(self.bias_kernel, memo))
        new.train(self.training)
        return new

    def _apply(self, fn: Any, recurse: bool = True) -> FusedConv:  # .to()/.half() make cached maps stale
        self._maps.clear()
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return "bias map" if self.bias_kernel is not None else ""


class Resize(nn.Module):
    """The adapter's bilinear resize, moved into the head: the same size rule as ``ShapeAdapter``.

    On the CPU an NCHW map is resized through a channels-last copy and
    turned back: the same kernel PyTorch's NCHW path reaches after two
    conversions of its own, about twice as fast for heatmap-sized maps.
    """

    def __init__(self, feature_stride: Sequence[float], target_stride: Sequence[float]) -> None:
        super().__init__()
        self.feature_stride = tuple(float(s) for s in feature_stride)
        self.target_stride = tuple(float(s) for s in target_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = target_size((x.shape[-2], x.shape[-1]), self.feature_stride, self.target_stride)
        if x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous() and tuple(x.shape[-2:]) != size:
            return resize_to(x.contiguous(memory_format=torch.channels_last), size).contiguous()
        return resize_to(x, size)

    def extra_repr(self) -> str:
        return f"stride {self.feature_stride}->{self.target_stride}, bilinear"


class Pointwise(nn.Module):
    """A 1x1 conv; on the CPU, for an NCHW map, run as one batched matrix product.

    Same math, and two to five times faster than the CPU conv path for the
    thin heatmap convs of pose heads, which reorders its input first.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous():
            return self.conv(x)
        n, c, h, w = x.shape
        weight = self.conv.weight.view(self.conv.out_channels, c)
        out = torch.matmul(weight, x.view(n, c, h * w))
        if self.conv.bias is not None:
            out.add_(self.conv.bias.view(-1, 1).to(out.dtype))
        return out.view(n, -1, h, w)


class FusedChain(nn.Sequential):
    """The fused adapter + head body; optionally turns its input channels_last first."""

    def __init__(self, *layers: nn.Module, channels_last: bool = False) -> None:
        super().__init__(*layers)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class CompileGuard(nn.Module):
    """Runs ``module`` through torch.compile; on the first failure, warns once and runs it eagerly.

    Compiling happens on the first call (that is when torch.compile fails,
    if it does). ``compile_error`` records why it failed (None while it works).
    """

    def __init__(self, module: nn.Module, options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.module = module
        self.options = dict(options or {})
        self.compile_error: str | None = None
        compiled: Callable[..., Any] | None = None
        try:
            compiled = torch.compile(module, **self.options)
        except Exception as exc:  # torch.compile refuses some platforms up front
            self._fail(exc)
        # kept outside nn.Module's registry: the compiled wrapper shares ``module``'s weights
        object.__setattr__(self, "_compiled", compiled)

    def _fail(self, exc: BaseException) -> None:
        text = " ".join(str(exc).split()).split(" Set TORCHDYNAMO_VERBOSE")[0]  # drop dynamo's debugging advice
        self.compile_error = f"{type(exc).__name__}: {text}"[:300]
        object.__setattr__(self, "_compiled", None)
        warnings.warn(f"torch.compile failed, running eagerly: {self.compile_error}", RuntimeWarning, stacklevel=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compiled = self.__dict__.get("_compiled")
        if compiled is not None:
            try:
                return compiled(x)
            except Exception as exc:  # any compiler failure: fall back; a real input error re-raises below
                self._fail(exc)
        return self.module(x)

    def __deepcopy__(self, memo: dict[int, Any]) -> CompileGuard:
        new = CompileGuard(copy.deepcopy(self.module, memo), self.options)
        new.train(self.training)
        return new


class AdaptedHead(nn.Module):
    """Adapter (neck) + head as one module: ``feats`` (the backbone's raw output) -> head output.

    The head is an mmpose HeatmapHead-like head (given the neck's tuple) or
    an ``nn.Sequential`` (given the tensor). ``fuse`` accepts and returns it.
    """

    def __init__(self, neck: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.neck = neck
        self.head = head

    def forward(self, feats: Any) -> torch.Tensor:
        x = self.neck(feats)
        if _is_heatmap_head(self.head):
            return self.head(x)
        return self.head(x[-1])


# ---------------------------------------------------------------------------------------------
# layer analysis


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    check = getattr(compiler, "is_compiling", None)
    return bool(check()) if check is not None else False


def _is_heatmap_head(head: nn.Module) -> bool:
    """An mmpose head whose forward is HeatmapHead's: feats[-1] -> deconv -> conv -> final.

    Looked up only when mmpose is already loaded (a model holding an mmpose head
    loaded it), so the core never imports OpenMMLab itself.
    """
    heads = sys.modules.get("mmpose.models.heads")
    heatmap_head = getattr(heads, "HeatmapHead", None)
    if heatmap_head is None:
        return False
    return isinstance(head, heatmap_head) and type(head).forward is heatmap_head.forward


def _conv_forwards() -> tuple[Callable[..., Any], ...]:
    """Forwards with torch's conv math: torch's own, and mmcv's empty-tensor wrappers when loaded."""
    forwards: list[Callable[..., Any]] = [nn.Conv2d.forward, nn.ConvTranspose2d.forward]
    wrappers = sys.modules.get("mmcv.cnn.bricks.wrappers")
    for name in ("Conv2d", "ConvTranspose2d"):
        cls = getattr(wrappers, name, None)
        if cls is not None:
            forwards.append(cls.forward)
    return tuple(forwards)


def _plain_conv(m: nn.Module) -> nn.Conv2d | nn.ConvTranspose2d | None:
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


def _is_pointwise(m: nn.Module) -> bool:
    """Per-pixel linear maps, which commute with a bilinear resize."""
    if _is_eval_bn(m):
        return True
    conv = _plain_conv(m)
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
    if _is_heatmap_head(head):
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
    conv = _plain_conv(m)
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
class _Parts:
    adapter: ShapeAdapter
    head: nn.Module
    layers: tuple[tuple[str, nn.Module], ...]


def _parts(model: Any) -> _Parts:
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
    if not isinstance(adapter, ShapeAdapter):
        raise FuseError(
            f"the neck is {type(adapter).__name__}, not an adaptkit ShapeAdapter; only adaptkit's adapter can be fused"
        )
    if not isinstance(head, nn.Module):
        raise FuseError(f"the head must be an nn.Module, got {type(head).__name__}")
    return _Parts(adapter, head, tuple(_head_layers(head)))


def _bn_pairs(layers: Sequence[tuple[str, nn.Module]]) -> list[int]:
    """Indices of eval BatchNorms that directly follow a conv they can fold into."""
    pairs: list[int] = []
    for i in range(1, len(layers)):
        conv = _plain_conv(layers[i - 1][1])
        if conv is None or not _is_eval_bn(layers[i][1]) or conv.out_channels != layers[i][1].num_features:
            continue
        if isinstance(conv, nn.ConvTranspose2d) and conv.groups != 1:
            continue
        if pairs and pairs[-1] == i - 1:
            continue
        pairs.append(i)
    return pairs


@dataclass(frozen=True)
class _Decision:
    plan: FusionPlan
    fold: bool
    resize_at: int | None  # index in the fused chain, before which the resize runs
    bn: tuple[int, ...]  # head-layer indices of BatchNorms folded into the conv before them


def _fold_blocker(adapter: ShapeAdapter, first: nn.Module | None) -> str | None:
    """Why the projection cannot fold into the head's first layer (None when it can)."""
    if first is None:
        return "the head has no layer to fold into"
    conv = _plain_conv(first)
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


def _decide(parts: _Parts) -> _Decision:
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
        bias_map = _needs_bias_map(_plain_conv(layers[0][1]))  # type: ignore[arg-type]
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
    return _Decision(plan, fold, resize_at, tuple(bn))


def _pointwise_after_fold(m: nn.Module, folded_here: bool) -> bool:
    """Whether the resize may pass ``m``; a layer that takes the folded projection must stay pointwise."""
    if folded_here:
        conv = _plain_conv(m)
        return conv is not None and _is_pointwise(m) and not _needs_bias_map(conv)
    return _is_pointwise(m)


def _needs_bias_map(conv: nn.Conv2d | nn.ConvTranspose2d) -> bool:
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
    return _decide(_parts(model)).plan


# ---------------------------------------------------------------------------------------------
# weight math (float64, then back to the layer's dtype)


def _new_conv_like(
    conv: nn.Conv2d | nn.ConvTranspose2d, in_channels: int, weight: torch.Tensor, bias: torch.Tensor | None
) -> nn.Conv2d | nn.ConvTranspose2d:
    common = dict(
        in_channels=in_channels,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups if in_channels == conv.in_channels else 1,
        bias=bias is not None,
        padding_mode=conv.padding_mode,
        dtype=conv.weight.dtype,
    )
    new: nn.Conv2d | nn.ConvTranspose2d
    with torch.device("meta"):  # no init work: the weights are set below
        if isinstance(conv, nn.ConvTranspose2d):
            new = nn.ConvTranspose2d(output_padding=conv.output_padding, **common)  # type: ignore[arg-type]
        else:
            new = nn.Conv2d(**common)  # type: ignore[arg-type]
    new.weight = nn.Parameter(_standard(weight, conv.weight), requires_grad=False)
    if bias is not None:
        new.bias = nn.Parameter(_standard(bias, conv.weight), requires_grad=False)
    return new


def _standard(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` in ``like``'s dtype and device with plain row-major strides.

    einsum can return a 1x1 kernel with channels-last strides, which counts as
    contiguous but makes the conv convert its whole input on every call.
    """
    out = torch.empty(value.shape, dtype=like.dtype, device=like.device)
    return out.copy_(value)


def _fold_projection(proj: nn.Conv2d, layer: nn.Module) -> nn.Module:
    """``layer(proj(x))`` as one layer on ``x`` (a FusedConv when the bias needs a map, else a plain conv)."""
    conv = _plain_conv(layer)
    assert conv is not None  # checked by _fold_blocker
    wp = proj.weight.detach().double()[:, :, 0, 0]  # [mid, in]
    bp = proj.bias.detach().double() if proj.bias is not None else None
    w1 = conv.weight.detach().double()
    b1 = conv.bias.detach().double() if conv.bias is not None else None
    if isinstance(conv, nn.ConvTranspose2d):  # weight [mid, out, kh, kw]
        weight = torch.einsum("mohw,mi->iohw", w1, wp)
        kernel = torch.einsum("mohw,m->ohw", w1, bp)[None] if bp is not None else None  # [1, out, kh, kw]
    else:  # weight [out, mid, kh, kw]
        weight = torch.einsum("omhw,mi->oihw", w1, wp)
        kernel = torch.einsum("omhw,m->ohw", w1, bp)[:, None] if bp is not None else None  # [out, 1, kh, kw]
    bias = b1
    bias_kernel = None
    if kernel is not None:
        if _needs_bias_map(conv):
            bias_kernel = _standard(kernel, conv.weight)
        else:  # every output pixel sees every tap: a constant per channel
            constant = kernel.sum(dim=(2, 3)).flatten()
            bias = constant if bias is None else bias + constant
    new = _new_conv_like(conv, proj.in_channels, weight, bias)
    return FusedConv(new, bias_kernel) if bias_kernel is not None else new


def _fold_bn(layer: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """``bn(layer(x))`` as one layer (eval-mode BatchNorm)."""
    conv = _plain_conv(layer)
    assert conv is not None
    mean = bn.running_mean.detach().double()  # type: ignore[union-attr]
    var = bn.running_var.detach().double()  # type: ignore[union-attr]
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
    bias_kernel = layer.bias_kernel if isinstance(layer, FusedConv) else None
    if isinstance(conv, nn.ConvTranspose2d):  # [in, out, kh, kw], groups == 1
        weight = w * scale[None, :, None, None]
        if bias_kernel is not None:
            bias_kernel = _standard(bias_kernel.double() * scale[None, :, None, None], bias_kernel)
    else:
        weight = w * scale[:, None, None, None]
        if bias_kernel is not None:
            bias_kernel = _standard(bias_kernel.double() * scale[:, None, None, None], bias_kernel)
    bias = (b - mean) * scale + beta
    new = _new_conv_like(conv, conv.in_channels, weight, bias)
    return FusedConv(new, bias_kernel) if bias_kernel is not None else new


# ---------------------------------------------------------------------------------------------
# fuse


def _fused_chain(parts: _Parts, decision: _Decision, channels_last: bool) -> FusedChain:
    adapter = parts.adapter
    folded_bn = set(decision.bn)
    layers: list[nn.Module] = []
    for i, (_, m) in enumerate(parts.layers):
        if i in folded_bn:
            continue
        if i + 1 in folded_bn:  # new weights from the originals; no copy of the old ones needed
            layers.append(_fold_bn(m, parts.layers[i + 1][1]))  # type: ignore[arg-type]
        elif decision.fold and not layers:
            layers.append(m)  # read, never changed: the projection fold below makes a new layer
        else:
            layers.append(copy.deepcopy(m))
    if decision.fold:
        assert adapter.proj is not None
        layers[0] = _fold_projection(adapter.proj, layers[0])
    elif adapter.proj is not None:
        layers.insert(0, copy.deepcopy(adapter.proj))
    if decision.resize_at is not None:
        layers.insert(decision.resize_at, Resize(adapter.feature_stride, adapter.target_stride))
    layers = [Pointwise(m) if _is_plain_1x1(m) else m for m in layers]
    return FusedChain(*layers, channels_last=channels_last)


def _is_plain_1x1(m: nn.Module) -> TypeGuard[nn.Conv2d]:
    """A dense 1x1 conv with torch's conv math (no grouping, stride or padding)."""
    return (
        isinstance(m, nn.Conv2d)
        and _plain_conv(m) is m
        and _is_pointwise(m)
        and m.groups == 1
        and m.padding_mode == "zeros"
    )


def _select_only(adapter: ShapeAdapter) -> ShapeAdapter:
    """The adapter with its projection and resize taken out: select and layout only."""
    return ShapeAdapter(
        select=adapter.select,
        in_channels=adapter.in_channels,
        feature_stride=adapter.feature_stride,
        target_stride=adapter.feature_stride,
        layout=adapter.layout.value,
        prefix_tokens=adapter.prefix_tokens,
        grid=adapter.grid,
    )


def fuse(
    model: nn.Module | tuple[nn.Module, nn.Module],
    *,
    channels_last: bool = False,
    compile: bool = False,
    compile_options: dict[str, Any] | None = None,
) -> nn.Module:
    """An inference copy of ``model`` with the adapter folded into the head.

    ``model`` is an mmpose estimator whose neck is an adaptkit ShapeAdapter
    (the result keeps its class, so ``forward(mode='tensor')``, ``predict``
    with flip test and the head's decoder work as before), an
    ``AdaptedHead``, or an ``(adapter, head)`` pair (the result is an
    ``AdaptedHead``). The copy is in eval mode with gradients off; its
    outputs equal the eval-mode original within fp32 rounding. ``model`` is
    never changed. ``channels_last`` converts the copy's weights and the head
    chain's input; ``compile`` runs the fused head chain through
    ``torch.compile(**compile_options)`` and falls back to eager with a
    RuntimeWarning when that fails (``CompileGuard.compile_error`` says why).
    Raises FuseError for what cannot be fused exactly (no adaptkit adapter,
    an unknown head class).
    """
    parts = _parts(model)
    decision = _decide(parts)
    with torch.no_grad():
        chain: nn.Module = _fused_chain(parts, decision, channels_last)
        neck = _select_only(parts.adapter)
    if channels_last:
        chain = chain.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if compile:
        chain = CompileGuard(chain, compile_options)
    head: nn.Module = chain
    if _is_heatmap_head(parts.head):  # keep the head object (decoder, predict, loss settings), swap its layers
        head = _copy_skipping(
            parts.head, [getattr(parts.head, s) for s in ("deconv_layers", "conv_layers", "final_layer")]
        )
        head.deconv_layers = chain
        head.conv_layers = nn.Identity()
        head.final_layer = nn.Identity()
    fused: nn.Module
    if isinstance(model, nn.Module) and not isinstance(model, AdaptedHead):
        fused = _copy_skipping(model, [parts.adapter, parts.head])
        fused.neck = neck
        fused.head = head
        if channels_last:
            for name, child in fused.named_children():
                if name not in ("neck", "head"):
                    child.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    else:
        fused = AdaptedHead(neck, head)
    fused.eval()
    fused.requires_grad_(False)
    return fused


def _copy_skipping(module: nn.Module, skip: Sequence[nn.Module]) -> nn.Module:
    """A deep copy of ``module`` that leaves out the submodules in ``skip`` (they get replaced)."""
    memo: dict[int, Any] = {id(m): None for m in skip}
    return copy.deepcopy(module, memo)
