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
* The model is left as it was found (``adaptkit.core.preserve``): meta
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
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.func import functional_call

from adaptkit.core.layers import layer_rows
from adaptkit.core.layouts import Leaf, Shape, Size, describe_leaves
from adaptkit.core.preserve import count_parameters, initialised, model_preserved, swapped
from adaptkit.core.probe_errors import crash_error, crash_site, meta_error, meta_reason, module_names
from adaptkit.core.records import FeatureSpec, LayerRow, ProbeMode, ProbeResult, parse_enum
from adaptkit.core.shape_only import ShapeOnly
from adaptkit.core.shapes import parse_input_shape
from adaptkit.core.tree import iter_tensors
from adaptkit.errors import InputShapeError, OptionError, ProbeError, describe_failure, is_user_failure

__all__ = ["probe", "TraceMode", "DEFAULT_REAL_SIZE"]

#: the short side of the real fallback input (rounded to keep H mod 64)
DEFAULT_REAL_SIZE = 128
#: sizes congruent modulo this round every power-of-two stride up to it alike
_ALIGN = 64


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
    names = module_names(model)

    with model_preserved(model, run_device):
        if trace_mode is TraceMode.REAL:
            features = _probe_real(model, shape, second, real_fallback_size, dtype, run_device, names, None)
            used_mode, reason = ProbeMode.REAL, None
        else:
            features, used_mode, reason = _probe_meta_first(
                model, shape, second, real_fallback_size, dtype, run_device, names, strict=trace_mode is TraceMode.META
            )
        rows = _layers(model, shape, used_mode, dtype, run_device, names) if layers else None

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
    size2 = second or _scaled_second(requested)
    later: list[Leaf] | None = None
    try:
        first, later = _meta_forward_two(model, shape, _with_size(shape, size2), dtype)
    except ProbeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure on meta is a reason to try real tensors
        site = crash_site(exc, names)
        if strict:
            raise meta_error(exc, site) from None
        reason = meta_reason(exc, site)
    if first is None:
        features = _probe_real(model, shape, second, real_size, dtype, device, names, site)
        return features, ProbeMode.REAL, reason
    return describe_leaves(first, requested, later, size2, requested), ProbeMode.META, None


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
        site = crash_site(exc, names)
        # A crash where the meta trace crashed too is the model's own fault; one
        # elsewhere may be the small size (a fixed position embedding, a size check).
        if size1 == requested or (meta_site is not None and site == meta_site):
            raise crash_error(exc, site, _with_size(shape, size1)) from None
    if first is None:  # retried outside the handler, so the failed call's frames are freed
        size1 = requested
        try:
            first = _real_forward(model, shape, dtype, device)
        except ProbeError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise crash_error(exc, crash_site(exc, names), shape) from None
    if size1 == requested:
        size2 = second or _scaled_second(requested)
    else:
        size2 = (size1[0] + _ALIGN, size1[1] + 2 * _ALIGN)
    try:
        later = _real_forward(model, _with_size(shape, size2), dtype, device)
    except Exception:  # noqa: BLE001 - describe from one size
        later = None
    return describe_leaves(first, size1, later, size2, requested)


# ---------------------------------------------------------------------------- forwards


class _TwoTraces(nn.Module):
    """Both meta traces inside one ``functional_call``: the weights are swapped for meta tensors once, not twice.

    The second size may fail (a model that accepts one size only): then the
    probe describes the features from the first size alone.
    """

    def __init__(self, model: nn.Module, producers: _Producers) -> None:
        super().__init__()
        self.model = model
        self.producers = producers

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> tuple[list[Leaf], list[Leaf] | None]:
        leaves = _leaves(self.model(first), first, self.producers)
        self.producers.clear()
        try:
            later: list[Leaf] | None = _leaves(self.model(second), second, self.producers)
        except Exception:  # noqa: BLE001 - describe from one size
            later = None
        return leaves, later


class _Producers:
    """Which submodule returned each tensor: forward hooks on every submodule, removed on exit.

    The outermost submodule that returned the tensor itself wins (``layer3``
    over ``layer3.5``, whose output it also is); a submodule that returned it
    inside a list or dict counts only when none returned it bare.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.bare: list[tuple[torch.Tensor, str]] = []
        self.nested: list[tuple[torch.Tensor, str]] = []
        self.handles: list[Any] = []

    def __enter__(self) -> _Producers:
        for name, module in self.model.named_modules():
            if name:
                self.handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.clear()

    def clear(self) -> None:
        self.bare.clear()
        self.nested.clear()

    def _hook(self, name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                self.bare.append((output, name))
            else:
                self.nested.extend((t, name) for _, t in iter_tensors(output))

        return record

    def name_of(self, tensor: torch.Tensor) -> str | None:
        for records in (self.bare, self.nested):
            names = [n for t, n in records if t is tensor]
            if names:
                return names[-1]  # hooks fire inner first: the last is the outermost
        return None


def _meta_forward_two(
    model: nn.Module, shape: Shape, shape2: Shape, dtype: torch.dtype
) -> tuple[list[Leaf], list[Leaf] | None]:
    """The meta forward at the requested size, then at the second size (None when that one fails)."""
    x1 = torch.empty(shape, dtype=dtype, device="meta")
    x2 = torch.empty(shape2, dtype=dtype, device="meta")
    tensors = _meta_tensors(model, prefix="model.")  # outside the mode: no dispatch for each twin
    with torch.no_grad(), ShapeOnly(), _Producers(model) as producers:
        return _call(_TwoTraces(model, producers), tensors, x1, x2)  # type: ignore[no-any-return]


def _real_forward(model: nn.Module, shape: Shape, dtype: torch.dtype, device: torch.device) -> list[Leaf]:
    """A real forward on clones of every parameter and buffer, so in-place writes never reach the model."""
    generator = torch.Generator(device=device).manual_seed(0)  # never the global generator
    x = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    with torch.no_grad(), _Producers(model) as producers:
        output = _call(model, _real_tensors(model), x)
        return _leaves(output, x, producers)


class _UserExit(RuntimeError):
    """The backbone's forward called ``sys.exit`` (or raised another BaseException): a crash like any other."""


def _call(model: nn.Module, tensors: dict[str, torch.Tensor], *args: torch.Tensor) -> Any:
    """``functional_call`` with every alias swapped; ``sys.exit`` in the forward becomes an ordinary error."""
    try:
        return functional_call(model, tensors, args, tie_weights=False)
    except Exception:
        raise
    except BaseException as exc:
        if not is_user_failure(exc):
            raise
        what = describe_failure(exc)
        raise _UserExit(f"the forward {what[3:] if what.startswith('it ') else 'raised ' + what}") from exc


def _meta_tensors(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """A meta twin of every parameter and buffer, under every alias name (see ``adaptkit.core.preserve``)."""

    def meta(tensor: torch.Tensor) -> torch.Tensor:
        twin = torch.empty_like(tensor, device="meta")
        if tensor.requires_grad and twin.is_floating_point():
            twin.requires_grad_(True)
        return twin

    return swapped(model, meta, prefix=prefix)


def _real_tensors(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """A clone of every parameter and buffer, under every alias name: the forward may write them."""
    return swapped(model, lambda t: t.detach().clone(), prefix=prefix)


def _leaves(output: Any, x: torch.Tensor, producers: _Producers) -> list[Leaf]:
    leaves: list[Leaf] = []
    seen: list[tuple[str, torch.Tensor]] = []
    for path, tensor in iter_tensors(output):
        alias = next((p for p, t in seen if _same_tensor(tensor, t)), None)
        module = producers.name_of(tensor)
        leaves.append(Leaf(path, tuple(tensor.shape), tensor.dtype, _same_tensor(tensor, x), alias, module))
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


# ---------------------------------------------------------------------------- layers


def _layers(
    model: nn.Module, shape: Shape, mode: ProbeMode, dtype: torch.dtype, device: torch.device, names: dict[int, str]
) -> tuple[LayerRow, ...]:
    """The per-layer table at the requested size: on meta when the probe ran there, else real."""
    if mode is ProbeMode.META:
        x = torch.empty(shape, dtype=dtype, device="meta")
        tensors = _meta_tensors(model)
    else:
        x = torch.randn(shape, generator=torch.Generator(device=device).manual_seed(0), dtype=dtype, device=device)
        tensors = _real_tensors(model)
    try:
        return layer_rows(model, x, tensors, names)
    except Exception as exc:  # noqa: BLE001 - any failure names the module that crashed
        raise crash_error(exc, crash_site(exc, names), shape) from None
