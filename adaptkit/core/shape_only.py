"""Shape-only answers for the ops that dominate a meta trace (the probe's speed path).

On the meta device torch runs normalisations, upsampling, convolutions and
elementwise ops through Python reference code that costs more than the rest
of a backbone's trace together. ``ShapeOnly`` is a torch function mode that
answers those calls from their output-size rules after the same checks torch
makes, and hands anything unusual back to torch, so broken models still fail
with torch's own errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["ShapeOnly", "meta_like"]


class ShapeOnly(TorchFunctionMode):
    """Normalisations on meta tensors answer with their input's shape, skipping the decomposition.

    On the meta device torch runs batch, layer and group norm through Python
    decompositions that cost more than the rest of a backbone's trace
    together (HRNet-W32: ~80 % of the probe). They never change the input's
    shape, so the probe answers with an empty tensor of that shape, after
    the same checks torch makes (batch size in train mode, the normalized
    shape, channels divisible by the groups), so broken models still fail.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        check = _NORM_CHECKS.get(func)
        if check is not None and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            check(*args, **kwargs)
            return meta_like(args[0])
        rule = _SHAPE_RULES.get(func)
        if rule is not None:
            answer = rule(*args, **kwargs)
            if answer is not None:
                return answer
        return func(*args, **kwargs)


def _check_batch_norm(x: torch.Tensor, *args: Any, training: bool = False, **kwargs: Any) -> None:
    # the check F.batch_norm makes in train mode: statistics need more than one value per channel
    if (args[4] if len(args) > 4 else training) and x.dim() >= 2 and x.shape[1] and x.numel() // x.shape[1] == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")


def _check_layer_norm(x: torch.Tensor, normalized_shape: Sequence[int], *args: Any, **kwargs: Any) -> None:
    shape = tuple(normalized_shape) if isinstance(normalized_shape, (list, tuple, torch.Size)) else (normalized_shape,)
    if tuple(x.shape[x.dim() - len(shape) :]) != shape:
        raise RuntimeError(
            f"Given normalized_shape={list(shape)}, expected input with shape [*, {', '.join(map(str, shape))}], but got input of size{list(x.shape)}"
        )


def _check_group_norm(x: torch.Tensor, num_groups: int, *args: Any, **kwargs: Any) -> None:
    if x.dim() < 2 or x.shape[1] % num_groups:
        raise RuntimeError(
            f"Expected number of channels in input to be divisible by num_groups, but got input of shape {list(x.shape)} and num_groups={num_groups}"
        )


_NORM_CHECKS: dict[Callable[..., Any], Callable[..., None]] = {
    F.batch_norm: _check_batch_norm,
    F.layer_norm: _check_layer_norm,
    F.group_norm: _check_group_norm,
}


def meta_like(x: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like`` for a meta tensor, without its Python reference path (~25x slower per call)."""
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")


_RESIZE_MODES = frozenset({"nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear"})


def _meta_interpolate(
    input: Any,
    size: Any = None,
    scale_factor: Any = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> torch.Tensor | None:
    """``F.interpolate`` on a meta tensor, answered from the output size alone; None to let torch run it.

    The meta kernels of the upsampling ops are Python decompositions that
    cost more than the rest of an SCTNet trace together (half the probe).
    The output size follows torch's rule: ``size`` as given, else
    ``floor(side * scale)``. Anything unusual (both or neither of size and
    scale, recomputed scales, antialias, align_corners with a nearest mode,
    area and adaptive modes) goes to torch, so its checks and errors stay.
    """
    if not isinstance(input, torch.Tensor) or not input.is_meta or input.dim() not in (3, 4, 5):
        return None
    if mode not in _RESIZE_MODES or antialias or recompute_scale_factor or (size is None) == (scale_factor is None):
        return None
    if align_corners is not None and mode.startswith("nearest"):
        return None
    if {"linear": 3, "bilinear": 4, "bicubic": 4, "trilinear": 5}.get(mode, input.dim()) != input.dim():
        return None
    dims = input.dim() - 2
    values = size if size is not None else scale_factor
    values = list(values) if isinstance(values, (list, tuple)) else [values] * dims
    if len(values) != dims:
        return None
    if size is not None:
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            return None
        out = [int(v) for v in values]
    else:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
            return None
        out = [int(side * float(v)) for side, v in zip(input.shape[2:], values, strict=True)]
        if min(out) < 1:
            return None
    return torch.empty((*input.shape[:2], *out), dtype=input.dtype, device="meta")


def _meta_same_shape(input: Any, *args: Any, inplace: bool = False, **kwargs: Any) -> torch.Tensor | None:
    """An elementwise activation on a floating meta tensor: its own shape (the input itself when in place)."""
    if not isinstance(input, torch.Tensor) or not input.is_meta or not input.is_floating_point():
        return None
    options = [*args, *kwargs.values()]
    if any(isinstance(v, str) and v not in ("none", "tanh") for v in options):  # F.gelu's approximate
        return None
    inplace = inplace or any(v is True for v in args)  # F.relu(x, True)
    return input if inplace else meta_like(input)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """torch's broadcasting rule (``torch.broadcast_shapes`` is a Python reference, ~50x slower)."""
    if len(a) < len(b):
        a, b = b, a
    b = (1,) * (len(a) - len(b)) + b
    out = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y and x != 1 and y != 1:
            raise RuntimeError(
                f"The size of tensor a ({x}) must match the size of tensor b ({y}) at non-singleton dimension {i}"
            )
        out.append(y if x == 1 else x)
    return tuple(out)


def _meta_binary(input: Any, other: Any, *args: Any, **kwargs: Any) -> torch.Tensor | None:
    """``a + b`` / ``a * b`` on meta tensors: the broadcast shape and the promoted dtype."""
    if kwargs.get("out") is not None or not isinstance(input, torch.Tensor) or not input.is_meta:
        return None
    if isinstance(other, torch.Tensor):
        if not other.is_meta:
            return None
        shape = _broadcast(tuple(input.shape), tuple(other.shape))
    elif isinstance(other, (int, float)) and not isinstance(other, bool):
        shape = input.shape
    else:
        return None
    return torch.empty(shape, dtype=torch.result_type(input, other), device="meta")


def _meta_binary_(input: Any, other: Any, *args: Any, **kwargs: Any) -> torch.Tensor | None:
    """``a += b`` on meta tensors: ``a`` itself, when ``b`` broadcasts to it without changing its dtype."""
    result = _meta_binary(input, other, **kwargs)
    if result is None or result.shape != input.shape or result.dtype != input.dtype:
        return None  # torch raises its own error
    return input  # type: ignore[no-any-return]


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(type(v) is int for v in value):
        return value[0], value[1]
    return None


def _meta_conv2d(
    input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1
) -> torch.Tensor | None:
    """``conv2d`` on meta tensors from the output-size formula, after torch's channel and group checks.

    The meta kernel's Python shape code is a third of an HRNet trace. Unusual
    arguments (string padding, a non-4-D input, a mismatch torch must report)
    go to torch.
    """
    if not (isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor) and input.is_meta and weight.is_meta):
        return None
    s, p, d = _pair(stride), _pair(padding), _pair(dilation)
    if s is None or p is None or d is None or type(groups) is not int or groups < 1:
        return None
    if input.dim() != 4 or weight.dim() != 4 or input.dtype != weight.dtype:
        return None
    if input.shape[1] != weight.shape[1] * groups or weight.shape[0] % groups:
        return None
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],)):
        return None
    out = [(input.shape[2 + i] + 2 * p[i] - d[i] * (weight.shape[2 + i] - 1) - 1) // s[i] + 1 for i in range(2)]
    if min(out) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
        return None
    return torch.empty((input.shape[0], weight.shape[0], out[0], out[1]), dtype=input.dtype, device="meta")


_SHAPE_RULES: dict[Callable[..., Any], Callable[..., torch.Tensor | None]] = {
    torch.conv2d: _meta_conv2d,
    F.conv2d: _meta_conv2d,
    **dict.fromkeys((torch.Tensor.add_, torch.Tensor.__iadd__, torch.Tensor.mul_, torch.Tensor.__imul__), _meta_binary_),
    F.interpolate: _meta_interpolate,
    **dict.fromkeys(
        (F.relu, torch.relu, torch.Tensor.relu, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.gelu, F.silu,
         F.hardswish, F.hardsigmoid, F.mish, torch.sigmoid, torch.Tensor.sigmoid, torch.tanh, torch.Tensor.tanh),
        _meta_same_shape,
    ),
    **dict.fromkeys(
        (torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.mul, torch.Tensor.mul,
         torch.Tensor.__mul__, torch.Tensor.__rmul__),
        _meta_binary,
    ),
}  # fmt: skip
