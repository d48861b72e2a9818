"""The modules a fused model is made of: runtime pieces only, no decisions.

``adaptkit.core.fusion_plan`` decides what to fold and where the resize goes;
``adaptkit.core.fusion`` does the weight math and assembles these modules.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from adaptkit.core.adapter import resize_to, target_size

__all__ = [
    "FusedConv",
    "Resize",
    "Pointwise",
    "FusedChain",
    "CompileGuard",
    "AdaptedHead",
    "MAP_CACHE_SIZE",
    "is_heatmap_head",
]

#: bias maps kept per fused conv, one per input size seen
MAP_CACHE_SIZE = 8


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
        cacheable = not (is_compiling() or torch.jit.is_tracing())
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
            if len(self._maps) >= MAP_CACHE_SIZE:
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
            except Exception as exc:
                # the eager module decides: when it fails too, the input (or the model) is at fault and
                # compile stays on; when it runs, the compiler failed and is turned off
                out = self.module(x)
                self._fail(exc)
                return out
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
        if is_heatmap_head(self.head):
            return self.head(x)
        return self.head(x[-1])


def is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    check = getattr(compiler, "is_compiling", None)
    return bool(check()) if check is not None else False


def is_heatmap_head(head: nn.Module) -> bool:
    """An mmpose head whose forward is HeatmapHead's: feats[-1] -> deconv -> conv -> final.

    Looked up only when mmpose is already loaded (a model holding an mmpose head
    loaded it), so the core never imports OpenMMLab itself.
    """
    heads = sys.modules.get("mmpose.models.heads")
    heatmap_head = getattr(heads, "HeatmapHead", None)
    if heatmap_head is None:
        return False
    return isinstance(head, heatmap_head) and type(head).forward is heatmap_head.forward
