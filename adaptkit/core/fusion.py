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

The decision lives in ``fusion_plan`` (pure analysis), the runtime modules in
``fused_modules``; this module does the weight math and assembles them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, TypeGuard

import torch
import torch.nn as nn

from adaptkit.core.adapter import ShapeAdapter
from adaptkit.core.fused_modules import (
    AdaptedHead,
    CompileGuard,
    FusedChain,
    FusedConv,
    Pointwise,
    Resize,
    is_heatmap_head,
)
from adaptkit.core.fusion_plan import (
    Decision,
    FusionPlan,
    Parts,
    decide,
    find_parts,
    is_pointwise,
    needs_bias_map,
    plain_conv,
    plan_fusion,
)

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
    conv = plain_conv(layer)
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
        if needs_bias_map(conv):
            bias_kernel = _standard(kernel, conv.weight)
        else:  # every output pixel sees every tap: a constant per channel
            constant = kernel.sum(dim=(2, 3)).flatten()
            bias = constant if bias is None else bias + constant
    new = _new_conv_like(conv, proj.in_channels, weight, bias)
    return FusedConv(new, bias_kernel) if bias_kernel is not None else new


def _fold_bn(layer: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """``bn(layer(x))`` as one layer (eval-mode BatchNorm)."""
    conv = plain_conv(layer)
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


def _fused_chain(parts: Parts, decision: Decision, channels_last: bool) -> FusedChain:
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
        and plain_conv(m) is m
        and is_pointwise(m)
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
    parts = find_parts(model)
    decision = decide(parts)
    with torch.no_grad():
        chain: nn.Module = _fused_chain(parts, decision, channels_last)
        neck = _select_only(parts.adapter)
    if channels_last:
        chain = chain.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if compile:
        chain = CompileGuard(chain, compile_options)
    head: nn.Module = chain
    if is_heatmap_head(parts.head):  # keep the head object (decoder, predict, loss settings), swap its layers
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
