"""The shape probe: what a backbone returns, at which stride, in which layout.

The probe runs the backbone twice on a dummy input and describes every
tensor it returns (``FeatureSpec``). Why each choice:

* Shape-only first. The forward runs on the meta device, with meta tensors
  of the same shape and dtype swapped in for every parameter and buffer
  through ``torch.func.functional_call``: no copy of the weights, no real
  arithmetic, and the cost does not grow with the input size. When the
  meta trace cannot run (``.item()``, ``bool(tensor)``, data-dependent ops
  such as ``nonzero``, ops without a meta kernel, tensors kept outside the
  parameters and buffers), the probe falls back to a real forward on a small
  input and says why (``ProbeResult.mode`` and ``fallback_reason``).
* Two sizes tell layout and stride. Dimensions that change with the input
  size are spatial, the one that does not is channels, so an NHWC map is
  told apart from NCHW even when its channel count equals its height at one
  size. The second size is ``(2H, 3W)``: it keeps every divisibility the
  requested size has (patch 14, windows of 7 x 32, strides up to any power
  of two), and the two factors differ, so height and width never change in
  step. Token sequences (B, N, C) are solved from ``N = prefix + gh * gw``
  with ``gh = H / s`` (rounded down or up) at both sizes.
* The small real input keeps ``H mod 64`` and its second size is
  ``(h + 64, w + 128)``: sizes congruent modulo 64 round every power-of-two
  stride up to 64 the same way, so the shapes measured there extrapolate
  exactly to the requested size (they are reported at the requested size).
* The model is left as it was found (``adaptkit.core.state``): meta
  tensors, or clones in the real fallback, are swapped in for every
  parameter and buffer under every alias name, so the model's own tensors
  are never read for values or written; every module's attributes, the
  dicts and lists among them (caches), lazy modules, plain tensor attributes
  and the torch, Python and NumPy generators are restored in ``finally``;
  the forward runs under ``torch.no_grad``. The model keeps its own mode for
  the trace: train-only output structures are probed as they are.
* A genuine crash (the real forward fails too) raises ``ProbeError`` naming
  the innermost module of the model on the failing call stack.

A feature that is not a spatial map (a pooled vector, a logit, a scalar) is
``Layout.OTHER`` with ``spatial=None`` and ``stride=(0, 0)``: it has no grid,
so it has no stride; check ``FeatureSpec.is_spatial`` before using one. The
same holds for tokens whose count grows with the input but fits no square
grid (``Layout.NLC``, ``spatial=None``). A 4-D map whose size does not follow
the input (resized to a fixed size inside the model) is NCHW with the stride
it has at the requested size. When the model accepts the requested size only,
the layout is read from that one shape (the grid whose two axes shrink alike;
for tokens, the exact stride with the fewest prefix tokens).
"""

from __future__ import annotations

import enum
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from adaptkit.core.records import FeatureSpec, LayerRow, Layout, ProbeMode, ProbeResult, parse_enum
from adaptkit.core.shapes import parse_input_shape
from adaptkit.core.state import count_parameters, initialised, preserved, swapped
from adaptkit.core.tree import iter_tensors
from adaptkit.errors import InputShapeError, OptionError, ProbeError, describe_failure, is_user_failure

__all__ = ["probe", "TraceMode", "DEFAULT_REAL_SIZE"]

#: the short side of the real fallback input (rounded to keep H mod 64)
DEFAULT_REAL_SIZE = 128
#: sizes congruent modulo this round every power-of-two stride up to it alike
_ALIGN = 64
#: prefix tokens (class, distillation, register tokens) accepted from one size alone
_MAX_PREFIX_GUESS = 16

Size = tuple[int, int]
Shape = tuple[int, ...]


class TraceMode(str, enum.Enum):
    """How ``probe`` may run the backbone (the ``mode`` option)."""

    AUTO = "auto"  # meta first, real tensors on a small input when meta cannot run
    META = "meta"  # meta only; a model the meta device cannot run raises ProbeError
    REAL = "real"  # real tensors on a small input only


# ---------------------------------------------------------------------------- public entry


def probe(
    model: nn.Module,
    input_shape: str | Sequence[int],
    *,
    mode: str | TraceMode = TraceMode.AUTO,
    layers: bool = False,
    second_size: Sequence[int] | None = None,
    real_fallback_size: int = DEFAULT_REAL_SIZE,
    device: str | torch.device | None = None,
) -> ProbeResult:
    """Describe every tensor ``model`` returns for an input of ``input_shape``.

    ``mode``: "auto" (meta, then real on failure), "meta" or "real".
    ``layers``: also fill ``ProbeResult.layers`` with torchinfo's per-layer
    rows at the requested size: on the meta device when the probe ran there,
    else with a real forward at the requested size (which costs what a real
    forward costs).
    ``second_size``: (height, width) of the second probe, instead of (2H, 3W).
    ``real_fallback_size``: short side of the real fallback input.
    ``device``: where a real forward runs (default: the model's own device).

    Raises InputShapeError for a malformed shape, ProbeError when the
    backbone cannot run (the message names the failing module).
    """
    started = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise ProbeError(f"probe needs a torch.nn.Module, got {type(model).__name__}; build the backbone first")
    shape = parse_input_shape(input_shape)
    try:
        trace_mode = parse_enum(TraceMode, mode, "probe mode")
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    second = _check_size(second_size) if second_size is not None else None
    if isinstance(real_fallback_size, bool) or not isinstance(real_fallback_size, int) or real_fallback_size < 16:
        raise OptionError(f"real_fallback_size must be an integer of at least 16, got {real_fallback_size!r}")
    if isinstance(model, torch.jit.ScriptModule):
        raise ProbeError(
            "a TorchScript module cannot be probed (its tensors cannot be swapped); probe the eager nn.Module it was scripted from"
        )
    run_device = _real_device(model, device)
    dtype = _input_dtype(model)
    names = _module_names(model)

    with preserved(model, run_device):
        if trace_mode is TraceMode.REAL:
            features = _probe_real(model, shape, second, real_fallback_size, dtype, run_device, names, None)
            used_mode, reason = ProbeMode.REAL, None
        else:
            features, used_mode, reason = _probe_meta_first(
                model, shape, second, real_fallback_size, dtype, run_device, names, strict=trace_mode is TraceMode.META
            )
        rows = _layer_rows(model, shape, used_mode, dtype, run_device, names) if layers else None

    return ProbeResult(
        features=features,
        input_shape=shape,
        mode=used_mode,
        params=count_parameters(model),
        seconds=time.perf_counter() - started,
        fallback_reason=reason,
        layers=rows,
    )


def _probe_meta_first(
    model: nn.Module,
    shape: Shape,
    second: Size | None,
    real_size: int,
    dtype: torch.dtype,
    device: torch.device,
    names: dict[int, str],
    *,
    strict: bool,
) -> tuple[tuple[FeatureSpec, ...], ProbeMode, str | None]:
    requested: Size = (shape[2], shape[3])
    first, site, reason = None, None, None
    try:
        first = _meta_forward(model, shape, dtype)
    except ProbeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure on meta is a reason to try real tensors
        site = _crash_site(exc, names)
        reason = _meta_reason(exc, site)
        if strict:
            raise ProbeError(
                f"the meta trace failed {reason}; probe with mode='auto' or 'real' to run real tensors",
                module=site[0] if site else None,
            ) from None
    if first is None:
        features = _probe_real(model, shape, second, real_size, dtype, device, names, site)
        return features, ProbeMode.REAL, reason
    size2 = second or _scaled_second(requested)
    try:
        later = _meta_forward(model, _with_size(shape, size2), dtype)
    except Exception:  # noqa: BLE001 - a model that accepts only one size: describe it from that size
        later = None
    return _describe(first, requested, later, size2, requested), ProbeMode.META, None


def _probe_real(
    model: nn.Module,
    shape: Shape,
    second: Size | None,
    real_size: int,
    dtype: torch.dtype,
    device: torch.device,
    names: dict[int, str],
    meta_site: tuple[str, str] | None,
) -> tuple[FeatureSpec, ...]:
    """Real tensors on a small input; shapes extrapolated to the requested size."""
    requested: Size = (shape[2], shape[3])
    size1 = _small_size(requested, real_size)
    first = None
    try:
        first = _real_forward(model, _with_size(shape, size1), dtype, device)
    except ProbeError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified below
        site = _crash_site(exc, names)
        # A crash where the meta trace crashed too is the model's own fault; one
        # elsewhere may be the small size (a fixed position embedding, a size check).
        if size1 == requested or (meta_site is not None and site == meta_site):
            raise _crash_error(exc, site, _with_size(shape, size1)) from None
    if first is None:  # retried outside the handler, so the failed call's frames are freed
        size1 = requested
        try:
            first = _real_forward(model, shape, dtype, device)
        except ProbeError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _crash_error(exc, _crash_site(exc, names), shape) from None
    if size1 == requested:
        size2 = second or _scaled_second(requested)
    else:
        size2 = (size1[0] + _ALIGN, size1[1] + 2 * _ALIGN)
    try:
        later = _real_forward(model, _with_size(shape, size2), dtype, device)
    except Exception:  # noqa: BLE001 - describe from one size
        later = None
    return _describe(first, size1, later, size2, requested)


# ---------------------------------------------------------------------------- forwards


@dataclass(frozen=True)
class _Leaf:
    """One returned tensor, reduced to what the description needs (no storage kept)."""

    path: str
    shape: Shape
    dtype: torch.dtype
    is_input: bool
    alias_of: str | None


class _ShapeOnlyNorms(TorchFunctionMode):
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
            return torch.empty_like(args[0])
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


def _meta_forward(model: nn.Module, shape: Shape, dtype: torch.dtype) -> list[_Leaf]:
    """The forward on the meta device; the model's own tensors are never read or written."""
    x = torch.empty(shape, dtype=dtype, device="meta")
    with torch.no_grad(), _ShapeOnlyNorms():
        output = _call(model, _meta_tensors(model), x)
    return _leaves(output, x)


def _real_forward(model: nn.Module, shape: Shape, dtype: torch.dtype, device: torch.device) -> list[_Leaf]:
    """A real forward on clones of every parameter and buffer, so in-place writes never reach the model."""
    generator = torch.Generator(device=device).manual_seed(0)  # never the global generator
    x = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    with torch.no_grad():
        output = _call(model, _real_tensors(model), x)
    return _leaves(output, x)


class _UserExit(RuntimeError):
    """The backbone's forward called ``sys.exit`` (or raised another BaseException): a crash like any other."""


def _call(model: nn.Module, tensors: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
    """``functional_call`` with every alias swapped; ``sys.exit`` in the forward becomes an ordinary error."""
    try:
        return functional_call(model, tensors, (x,), tie_weights=False)
    except Exception:
        raise
    except BaseException as exc:
        if not is_user_failure(exc):
            raise
        what = describe_failure(exc)
        raise _UserExit(f"the forward {what[3:] if what.startswith('it ') else 'raised ' + what}") from exc


def _meta_tensors(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """A meta twin of every parameter and buffer, under every alias name (see ``adaptkit.core.state``)."""

    def meta(tensor: torch.Tensor) -> torch.Tensor:
        twin = torch.empty_like(tensor, device="meta")
        if tensor.requires_grad and twin.is_floating_point():
            twin.requires_grad_(True)
        return twin

    return swapped(model, meta, prefix=prefix)


def _real_tensors(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """A clone of every parameter and buffer, under every alias name: the forward may write them."""
    return swapped(model, lambda t: t.detach().clone(), prefix=prefix)


def _leaves(output: Any, x: torch.Tensor) -> list[_Leaf]:
    leaves: list[_Leaf] = []
    seen: list[tuple[str, torch.Tensor]] = []
    for path, tensor in iter_tensors(output):
        alias = next((p for p, t in seen if _same_tensor(tensor, t)), None)
        leaves.append(_Leaf(path, tuple(tensor.shape), tensor.dtype, _same_tensor(tensor, x), alias))
        seen.append((path, tensor))
    if not leaves:
        raise ProbeError(f"the backbone returned no tensor (got {type(output).__name__}); adaptkit needs feature maps")
    return leaves


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same tensor: the object itself, or a view of the same memory, shape and strides."""
    if a is b:
        return True
    try:
        return bool(
            a.untyped_storage() is b.untyped_storage()
            and a.storage_offset() == b.storage_offset()
            and a.shape == b.shape
            and a.stride() == b.stride()
            and a.dtype == b.dtype
        )
    except (RuntimeError, NotImplementedError, TypeError):  # sparse, nested or exotic tensors
        return False


# ---------------------------------------------------------------------------- describing


def _describe(
    first: list[_Leaf], size1: Size, later: list[_Leaf] | None, size2: Size, target: Size
) -> tuple[FeatureSpec, ...]:
    """FeatureSpecs at the ``target`` size from leaves seen at one or two sizes."""
    by_path = {leaf.path: leaf for leaf in later} if later is not None else {}
    specs = []
    for leaf in first:
        other = by_path.get(leaf.path)
        if other is not None and len(other.shape) == len(leaf.shape):
            specs.append(_from_two(leaf, size1, other.shape, size2, target))
        else:
            specs.append(_from_one(leaf, size1, target))
    return tuple(specs)


def _spec(
    leaf: _Leaf, shape: Shape, layout: Layout, channels: int, spatial: Size | None, target: Size, prefix: int = 0
) -> FeatureSpec:
    if spatial is not None and min(spatial) > 0:
        stride = (_ratio(target[0], spatial[0]), _ratio(target[1], spatial[1]))
    else:
        spatial, stride = None, (0, 0)
        if layout is not Layout.NLC:
            layout = Layout.OTHER
    return FeatureSpec(
        path=leaf.path,
        shape=shape,
        channels=channels,
        stride=stride,
        layout=layout,
        spatial=spatial,
        prefix_tokens=prefix,
        dtype=str(leaf.dtype).removeprefix("torch."),
        is_input=leaf.is_input,
        alias_of=leaf.alias_of,
    )


def _other(leaf: _Leaf, shape: Shape, target: Size) -> FeatureSpec:
    channels = shape[1] if len(shape) >= 2 else 1
    return _spec(leaf, shape, Layout.OTHER, channels, None, target)


def _from_two(leaf: _Leaf, size1: Size, shape2: Shape, size2: Size, target: Size) -> FeatureSpec:
    a, b = leaf.shape, shape2
    changed = [i for i in range(len(a)) if a[i] != b[i]]
    if not changed:
        if len(a) == 4 and max(a[2], a[3]) > 1:  # a map of fixed size (resized inside the model)
            return _spec(leaf, a, Layout.NCHW, a[1], (a[2], a[3]), target)
        return _other(leaf, a, target)
    if 0 in changed:  # batch folded with positions: no layout adaptkit can undo
        return _other(leaf, _scale_area(a, b, size1, size2, target), target)
    if len(a) == 4 and changed in ([2, 3], [1, 2]):
        i, j = changed
        fh = _extrapolate(a[i], b[i], size1[0], size2[0], target[0])
        fw = _extrapolate(a[j], b[j], size1[1], size2[1], target[1])
        shape = list(a)
        shape[i], shape[j] = fh, fw
        layout, channels = (Layout.NCHW, a[1]) if changed == [2, 3] else (Layout.NHWC, a[3])
        return _spec(leaf, tuple(shape), layout, channels, (fh, fw), target)
    if len(a) == 3 and changed == [1]:
        solved = _solve_tokens(a[1], size1, b[1], size2)
        if solved is not None:
            stride, grid, prefix = solved
            gh, gw = grid(target[0], stride), grid(target[1], stride)
            return _spec(leaf, (a[0], prefix + gh * gw, a[2]), Layout.NLC, a[2], (gh, gw), target, prefix)
        return _spec(leaf, _scale_area(a, b, size1, size2, target), Layout.NLC, a[2], None, target)
    return _other(leaf, _scale_area(a, b, size1, size2, target), target)


def _from_one(leaf: _Leaf, size: Size, target: Size) -> FeatureSpec:
    """Layout from one size only (the model rejected the second): plausible grids."""
    a = leaf.shape
    scale = (target[0] / size[0], target[1] / size[1])
    if len(a) == 4:
        for dims, layout, channels in (((2, 3), Layout.NCHW, a[1]), ((1, 2), Layout.NHWC, a[3])):
            fh, fw = a[dims[0]], a[dims[1]]
            if _grid_like(fh, fw, size):
                fh, fw = round(fh * scale[0]), round(fw * scale[1])
                shape = list(a)
                shape[dims[0]], shape[dims[1]] = fh, fw
                return _spec(leaf, tuple(shape), layout, channels, (fh, fw), target)
    if len(a) == 3:
        guess = _guess_tokens(a[1], size)
        if guess is not None:
            stride, grid, prefix = guess
            gh, gw = grid(target[0], stride), grid(target[1], stride)
            return _spec(leaf, (a[0], prefix + gh * gw, a[2]), Layout.NLC, a[2], (gh, gw), target, prefix)
    return _other(leaf, a, target)


def _grid_like(fh: int, fw: int, size: Size) -> bool:
    """(fh, fw) could be the input grid at one stride: both axes shrink by about the same factor."""
    if fh < 1 or fw < 1 or fh > size[0] or fw > size[1]:
        return False
    sh, sw = size[0] / fh, size[1] / fw
    return abs(sh - sw) <= 0.1 * max(sh, sw)


def _floor_div(n: int, s: int) -> int:
    return n // s


def _ceil_div(n: int, s: int) -> int:
    return -(-n // s)


_GRIDS: tuple[Callable[[int, int], int], ...] = (_floor_div, _ceil_div)


def _solve_tokens(n1: int, size1: Size, n2: int, size2: Size) -> tuple[int, Callable[[int, int], int], int] | None:
    """(stride, grid rounding, prefix tokens) with N = prefix + grid(H, s) * grid(W, s) at both sizes."""
    area_change = size2[0] * size2[1] - size1[0] * size1[1]
    if n2 == n1 or area_change == 0 or (n2 - n1) * area_change < 0:
        return None
    estimate = math.sqrt(area_change / (n2 - n1))
    low, high = max(1, math.floor(estimate * 0.75)), math.ceil(estimate * 1.25)
    for stride in sorted(range(low, high + 1), key=lambda s: abs(s - estimate)):
        for grid in _GRIDS:
            p1 = n1 - grid(size1[0], stride) * grid(size1[1], stride)
            p2 = n2 - grid(size2[0], stride) * grid(size2[1], stride)
            if p1 == p2 and 0 <= p1 < n1:
                return stride, grid, p1
    return None


def _guess_tokens(n: int, size: Size) -> tuple[int, Callable[[int, int], int], int] | None:
    """The most plausible token grid at one size: exact strides first, then fewer prefix tokens."""
    found = []
    for stride in range(2, min(size) + 1):
        for grid in _GRIDS:
            prefix = n - grid(size[0], stride) * grid(size[1], stride)
            if 0 <= prefix <= _MAX_PREFIX_GUESS:
                exact = size[0] % stride == 0 and size[1] % stride == 0
                found.append((not exact, prefix, stride & (stride - 1) != 0, stride, grid))
    if not found:
        return None
    *_, stride, grid = min(found, key=lambda f: f[:4])
    return stride, grid, n - grid(size[0], stride) * grid(size[1], stride)


def _extrapolate(v1: int, v2: int, x1: int, x2: int, x: int) -> int:
    """The value at ``x`` on the line through (x1, v1), (x2, v2); exact when x is x1."""
    if x == x1 or x2 == x1:
        return v1
    return round(v1 + (x - x1) * (v2 - v1) / (x2 - x1))


def _scale_area(a: Shape, b: Shape, size1: Size, size2: Size, target: Size) -> Shape:
    """Dims of an unrecognised layout, extrapolated along the input area."""
    area1, area2, area = size1[0] * size1[1], size2[0] * size2[1], target[0] * target[1]
    return tuple(_extrapolate(u, v, area1, area2, area) if u != v else u for u, v in zip(a, b, strict=True))


def _ratio(num: int, den: int) -> float:
    """num / den, an int when exact (strides print as 8, not 8.0)."""
    return num // den if num % den == 0 else num / den


# ---------------------------------------------------------------------------- sizes


def _check_size(value: Sequence[int]) -> Size:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise InputShapeError(f"second_size {value!r} is not (height, width); pass two positive integers") from None
    if h <= 0 or w <= 0:
        raise InputShapeError(f"second_size {value!r} has a zero or negative side; pass two positive integers")
    return h, w


def _scaled_second(size: Size) -> Size:
    return 2 * size[0], 3 * size[1]


def _small_size(size: Size, short_side: int) -> Size:
    """A real-forward size near ``short_side`` that keeps each side modulo 64."""
    if min(size) <= short_side:
        return size
    scale = short_side / min(size)
    return _congruent(size[0], size[0] * scale), _congruent(size[1], size[1] * scale)


def _congruent(full: int, target: float) -> int:
    rest = full % _ALIGN
    return rest + _ALIGN * max(1, round((target - rest) / _ALIGN))


def _with_size(shape: Shape, size: Size) -> Shape:
    return (shape[0], shape[1], size[0], size[1])


def _real_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError):
            raise OptionError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise OptionError(f"device {device!r}: CUDA is not available on this machine; use 'cpu'")
        if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise OptionError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return chosen
    for tensor in initialised((*model.parameters(), *model.buffers())):
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


def _input_dtype(model: nn.Module) -> torch.dtype:
    for tensor in initialised((*model.parameters(), *model.buffers())):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


# ---------------------------------------------------------------------------- failures


def _module_names(model: nn.Module) -> dict[int, str]:
    names: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), name)
    return names


def _crash_site(exc: BaseException, names: dict[int, str]) -> tuple[str, str] | None:
    """(qualified name, class) of the innermost model module on the failing call stack."""
    error: BaseException | None = exc
    for _ in range(8):  # the error, then what it was raised from
        if error is None:
            break
        site = None
        tb = error.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names:
                site = (names[id(owner)], type(owner).__name__)
            tb = tb.tb_next
        if site is not None:
            return site
        error = error.__cause__ or error.__context__
    return None


def _root_message(exc: BaseException) -> str:
    """The original one-line message (torchinfo wraps the model's error in its own)."""
    while exc.__cause__ is not None and "torchinfo" in str(exc):
        exc = exc.__cause__
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _where(site: tuple[str, str] | None) -> str:
    if site is None:
        return ""
    name, cls = site
    return f"in module {name!r} ({cls})" if name else f"in the top-level forward ({cls})"


def _crash_error(exc: BaseException, site: tuple[str, str] | None, shape: Shape) -> ProbeError:
    where = _where(site)
    message = _shorten(_root_message(exc), 400)
    at = "x".join(str(d) for d in shape)
    text = (
        f"backbone crashed {where} at input {at}: {message}" if where else f"backbone crashed at input {at}: {message}"
    )
    return ProbeError(text, module=site[0] if site else None)


_META_REASONS: tuple[tuple[str, str], ...] = (
    (r"item\(\) cannot be called on meta", "calls .item() on a tensor"),
    (r"torch\.nonzero\(\)|aten::nonzero", "uses a data-dependent op (nonzero / boolean-mask indexing)"),
    (r"Cannot copy out of meta tensor", "reads tensor values (.tolist(), .cpu())"),
    (r"to numpy", "converts a tensor to numpy"),
    (r"not on the expected device", "mixes real tensors that are not parameters or buffers with the input"),
)


def _meta_reason(exc: BaseException, site: tuple[str, str] | None) -> str:
    """A short reason why the meta trace stopped, for ``ProbeResult.fallback_reason``."""
    message = _root_message(exc)
    reason = next((words for pattern, words in _META_REASONS if re.search(pattern, message)), None)
    if reason is None:
        op = re.search(r"(aten::\w+).*(?:Meta|meta)", message)
        reason = f"op {op.group(1)} has no meta kernel" if op else _shorten(message.split(". ")[0], 120)
    where = _where(site)
    return f"{where}: {reason}" if where else reason


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


# ---------------------------------------------------------------------------- layers


class _Summarize(nn.Module):
    """Runs torchinfo on its child from inside ``functional_call``.

    functional_call swaps tensors only around a module call; calling torchinfo
    from this wrapper's forward lets torchinfo's own forward see the swapped
    (meta, or cloned) tensors, without moving or copying the model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.stats: Any = None
        self.nested: set[int] = set()  # modules that returned a container, not one tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torchinfo

        def note(module: nn.Module, _args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                self.nested.add(id(module))

        hooks = [m.register_forward_hook(note) for m in self.model.modules()]
        try:
            self.stats = torchinfo.summary(
                self.model,
                input_data=[x],
                depth=1_000,
                mode="train" if self.model.training else "eval",  # flags are restored by _model_preserved
                verbose=0,
                col_names=("output_size", "num_params"),
            )
        finally:
            for hook in hooks:
                hook.remove()
        return x


def _layer_rows(
    model: nn.Module, shape: Shape, mode: ProbeMode, dtype: torch.dtype, device: torch.device, names: dict[int, str]
) -> tuple[LayerRow, ...]:
    """torchinfo's per-layer rows at the requested size (meta when the probe ran on meta)."""
    wrapper = _Summarize(model)
    with torch.no_grad():
        if mode is ProbeMode.META:
            x = torch.empty(shape, dtype=dtype, device="meta")
            tensors = _meta_tensors(model, prefix="model.")
        else:
            x = torch.randn(shape, generator=torch.Generator(device=device).manual_seed(0), dtype=dtype, device=device)
            tensors = _real_tensors(model, prefix="model.")
        try:
            functional_call(wrapper, tensors, (x,), tie_weights=False)
        except Exception as exc:  # noqa: BLE001
            raise _crash_error(exc, _crash_site(exc, names), shape) from None
        finally:
            _forget_torchinfo_cache(model)
    rows = []
    for info in wrapper.stats.summary_list:
        size = info.output_size  # torchinfo sizes one tensor of a container output: report none then
        flat = (
            id(info.module) not in wrapper.nested
            and isinstance(size, (list, tuple))
            and all(isinstance(d, int) for d in size)
        )
        rows.append(
            LayerRow(
                name=names.get(id(info.module), info.var_name),
                type=info.class_name,
                depth=int(info.depth),
                output_shape=tuple(size) if flat else None,
                params=int(info.num_params),
            )
        )
    return tuple(rows)


def _forget_torchinfo_cache(model: nn.Module) -> None:
    """torchinfo keeps the last summary per class name, and with it the model; drop ours."""
    import torchinfo.torchinfo as impl

    cache = getattr(impl, "_cached_forward_pass", None)
    if isinstance(cache, dict):
        cache.pop(type(model).__name__, None)
