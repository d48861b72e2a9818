"""Bench stage: naive vs planned vs fused adapters, and the whole estimator, timed side by side.

The library measures and returns frozen records; it never prints. The
``adaptkit bench`` command (and ``benchmarks/adapter_bench.py``) renders
them. Parts, after torch.utils.benchmark:

* ``measure(fn, ...) -> Measurement``: warm-up, then timed runs (CUDA
  events on a GPU, ``perf_counter`` on the CPU), p50/p90, throughput and
  peak memory. A time budget caps the runs of slow calls, so a whole
  estimator at batch 32 and 640x640 on two CPU cores is timed a few times,
  not twenty.
* ``make_request(...) -> BenchRequest``: option strings checked once, at the
  boundary (``BenchError``: one line).
* ``run_bench(request) -> BenchResult``: builds each target with the
  adapter, times every variant at every batch and input size, and
  ``summarize`` turns the measurements into the figures that matter
  (fused vs planned speed-up, the adapter's share of end-to-end time).
* ``write_json`` / ``write_plot``: the result file named after the device,
  and latency-vs-batch per variant (matplotlib Agg).

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over one call,
minus what was allocated before it. On the CPU, the peak of the bytes the
call itself allocates and still holds, from the allocation and free events
of ``torch.profiler`` (profile_memory) in time order; this is the CPU
allocator's view (activations and workspaces), not the process RSS, which
the allocator's caching makes meaningless for one call.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from adaptkit.core.records import parse_enum
from adaptkit.errors import BenchError
from adaptkit.mm.stock import STOCK_CONFIGS

if TYPE_CHECKING:
    from adaptkit.core.adapter import ShapeAdapter

__all__ = [
    "Device",
    "Precision",
    "Variant",
    "Measurement",
    "Environment",
    "BenchRequest",
    "BenchResult",
    "Summary",
    "TARGETS",
    "measure",
    "make_request",
    "parse_batches",
    "parse_inputs",
    "environment",
    "run_bench",
    "summarize",
    "result_filename",
    "result_document",
    "write_json",
    "write_plot",
]

#: short names for the stock targets the benchmark knows
TARGETS: dict[str, str] = dict(STOCK_CONFIGS)
DEFAULT_SOURCE = "sctnet-b"
DEFAULT_BATCHES = (1, 8, 32)
DEFAULT_INPUTS = ((256, 192), (640, 640))
_MAX_BATCH = 4096
_MAX_SIDE = 8192


class Device(str, enum.Enum):
    CPU = "cpu"
    CUDA = "cuda"
    AUTO = "auto"


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"  # autocast
    BF16 = "bf16"  # autocast


class Variant(str, enum.Enum):
    """What one measurement times."""

    HEAD = "head"  # the stock head alone, on the input it expects: the reference
    NAIVE_HEAD = "naive-head"  # the hand fix: head rebuilt for the raw channels, F.interpolate of its output
    NAIVE_RESIZE = "naive-resize"  # resize the raw feature first, then project, then the head
    PLANNED = "planned"  # adaptkit's ShapeAdapter + the stock head
    FUSED = "fused"  # adaptkit.fuse of the above
    ESTIMATOR = "estimator"  # backbone + planned adapter + head
    ESTIMATOR_FUSED = "estimator-fused"  # backbone + fused adapter and head


NECK_HEAD_VARIANTS = (Variant.HEAD, Variant.NAIVE_HEAD, Variant.NAIVE_RESIZE, Variant.PLANNED, Variant.FUSED)
ESTIMATOR_VARIANTS = (Variant.ESTIMATOR, Variant.ESTIMATOR_FUSED)


# ---------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class Measurement:
    """One variant timed at one batch size and input size. Times in milliseconds."""

    variant: str
    target: str
    input_hw: tuple[int, int]
    batch: int
    device: str
    precision: str
    times_ms: tuple[float, ...]
    warmup: int  # warm-up runs actually made
    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    throughput: float  # images per second, from p50
    memory_bytes: int | None  # peak, see memory_kind
    memory_kind: str  # "cuda-peak-allocated", "cpu-peak-allocated" or "none"
    cuda_graph: bool
    note: str = ""


@dataclass(frozen=True)
class Environment:
    device: str  # "cpu" or "cuda"
    device_name: str
    threads: int  # torch.get_num_threads()
    load_average: tuple[float, float, float] | None  # 1, 5, 15 min: other work on the machine skews CPU timings
    torch_version: str
    python_version: str
    platform: str


@dataclass(frozen=True)
class BenchRequest:
    """A checked benchmark request; build it with ``make_request``."""

    source: str = DEFAULT_SOURCE
    targets: tuple[str, ...] = tuple(TARGETS)
    device: Device = Device.CPU
    batches: tuple[int, ...] = DEFAULT_BATCHES
    inputs: tuple[tuple[int, int], ...] = DEFAULT_INPUTS
    repeat: int = 10
    warmup: int = 2
    budget_s: float = 2.0  # per measurement: stop repeating a slow call once this is spent (at least one timed run)
    precision: Precision = Precision.FP32
    cuda_graphs: bool = False
    channels_last: bool = False
    estimator: bool = True  # time the whole estimator too
    quick: bool = False
    threads: int | None = None  # CPU threads for torch; None keeps torch's default


@dataclass(frozen=True)
class Summary:
    """The figures that matter for one target, input size and batch. Times in milliseconds."""

    target: str
    input_hw: tuple[int, int]
    batch: int
    head_ms: float
    planned_ms: float
    fused_ms: float
    naive_head_ms: float | None
    naive_resize_ms: float | None
    fused_speedup: float  # planned / fused, neck + head
    naive_speedup: float | None  # naive-head / fused
    estimator_ms: float | None
    estimator_fused_ms: float | None
    adapter_ms_planned: float  # planned - head: the adapter's own time
    adapter_ms_fused: float  # fused - head (may be negative: the fused head can beat the stock one)
    share_planned: float | None  # adapter_ms_planned / estimator_ms
    share_fused: float | None  # adapter_ms_fused / estimator_fused_ms


@dataclass(frozen=True)
class BenchResult:
    request: BenchRequest
    environment: Environment
    measurements: tuple[Measurement, ...]
    fusion: tuple[tuple[str, Any], ...]  # (target, FusionPlan)
    started: str  # ISO time
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------
# parsing


def parse_batches(value: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,8,32"`` -> (1, 8, 32); BenchError for anything else."""
    items = [p for p in re.split(r"[,\s]+", value.strip())] if isinstance(value, str) else list(value)
    items = [p for p in items if p != ""]
    if not items:
        raise BenchError(f"batch list {value!r} is empty; give sizes like 1,8,32")
    out: list[int] = []
    for item in items:
        try:
            n = int(item)
        except (TypeError, ValueError):
            raise BenchError(f"batch list {value!r}: {item!r} is not a whole number; give sizes like 1,8,32") from None
        if not 1 <= n <= _MAX_BATCH:
            raise BenchError(f"batch list {value!r}: {item!r} is not a batch size from 1 to {_MAX_BATCH}")
        if n not in out:
            out.append(n)
    return tuple(out)


def parse_inputs(value: str | Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """``"256x192,640x640"`` -> ((256, 192), (640, 640)) as (height, width); BenchError otherwise."""
    if isinstance(value, str):
        items: list[Any] = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    else:
        items = list(value)
    if not items:
        raise BenchError(f"input list {value!r} is empty; give HEIGHTxWIDTH sizes like 256x192,640x640")
    out: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, str):
            match = re.fullmatch(r"(\d+)[xX*](\d+)", item)
            if match is None:
                raise BenchError(f"input size {item!r} is not HEIGHTxWIDTH; give sizes like 256x192,640x640")
            hw = (int(match.group(1)), int(match.group(2)))
        else:
            try:
                h, w = (int(v) for v in item)
            except (TypeError, ValueError):
                raise BenchError(f"input size {item!r} is not (height, width)") from None
            hw = (h, w)
        if not all(1 <= s <= _MAX_SIDE for s in hw):
            raise BenchError(f"input size {item!r} must have sides from 1 to {_MAX_SIDE}")
        if hw not in out:
            out.append(hw)
    return tuple(out)


def _resolve_device(value: str | Device) -> Device:
    try:
        device = parse_enum(Device, value, "device")
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    assert isinstance(device, Device)
    if device is Device.AUTO:
        return Device.CUDA if torch.cuda.is_available() else Device.CPU
    if device is Device.CUDA and not torch.cuda.is_available():
        raise BenchError("--device cuda, but torch sees no CUDA device here; use --device cpu or auto")
    return device


def _resolve_target(name: str) -> str:
    return TARGETS.get(name.lower(), name)


def make_request(
    source: str = DEFAULT_SOURCE,
    targets: Sequence[str] | None = None,
    *,
    device: str | Device = Device.AUTO,
    batches: str | Sequence[int] = DEFAULT_BATCHES,
    inputs: str | Sequence[Sequence[int]] = DEFAULT_INPUTS,
    repeat: int | None = None,
    warmup: int | None = None,
    budget_s: float | None = None,
    precision: str | Precision = Precision.FP32,
    cuda_graphs: bool = False,
    channels_last: bool = False,
    estimator: bool = True,
    quick: bool = False,
    threads: int | None = None,
) -> BenchRequest:
    """Check every option before any work; BenchError (one line) for the first bad one.

    ``quick``: 3 timed runs after 1 warm-up with a 0.5 s budget, and the
    whole estimator only at the smallest batch and input size.
    """
    resolved = _resolve_device(device)
    try:
        prec = parse_enum(Precision, precision, "dtype")
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    assert isinstance(prec, Precision)
    if prec is Precision.FP16 and resolved is Device.CPU:
        raise BenchError("fp16 autocast needs a CUDA device; use --dtype bf16 or fp32 on the CPU")
    if cuda_graphs and resolved is not Device.CUDA:
        raise BenchError("--cuda-graphs needs a CUDA device; drop it on the CPU")
    repeat = repeat if repeat is not None else (3 if quick else 10)
    warmup = warmup if warmup is not None else (1 if quick else 2)
    budget = budget_s if budget_s is not None else (0.5 if quick else 2.0)
    if not isinstance(repeat, int) or repeat < 1:
        raise BenchError(f"--repeat must be a whole number of at least 1, got {repeat!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise BenchError(f"--warmup must be a whole number of at least 0, got {warmup!r}")
    if not budget > 0 or math.isinf(budget):
        raise BenchError(f"--budget must be a positive number of seconds, got {budget!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise BenchError(f"--threads must be a whole number of at least 1, got {threads!r}")
    if not source or not isinstance(source, str):
        raise BenchError("the backbone SOURCE is empty; name one, e.g. sctnet-b")
    names = tuple(targets) if targets else tuple(TARGETS)
    from adaptkit.mm.openmmlab import config_path

    for name in names:
        config_path(_resolve_target(name))  # ConfigError now, not after minutes of building
    return BenchRequest(
        source=source,
        targets=names,
        device=resolved,
        batches=parse_batches(batches),
        inputs=parse_inputs(inputs),
        repeat=repeat,
        warmup=warmup,
        budget_s=float(budget),
        precision=prec,
        cuda_graphs=cuda_graphs,
        channels_last=channels_last,
        estimator=estimator,
        quick=quick,
        threads=threads,
    )


# ---------------------------------------------------------------------------------------------
# environment


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def environment(device: Device | str = Device.CPU) -> Environment:
    """Where the numbers come from: device name, threads, versions."""
    kind = Device(device) if not isinstance(device, Device) else device
    if kind is Device.AUTO:
        kind = Device.CUDA if torch.cuda.is_available() else Device.CPU
    name = torch.cuda.get_device_name() if kind is Device.CUDA else _cpu_name()
    return Environment(
        device=kind.value,
        device_name=name,
        threads=torch.get_num_threads(),
        load_average=_load_average(),
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        platform=platform.platform(terse=True),
    )


def _load_average() -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return None
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def result_filename(env: Environment) -> str:
    """``adapter_bench-<device>-<device name slug>.json``."""
    return f"adapter_bench-{env.device}-{_slug(env.device_name)}.json"


# ---------------------------------------------------------------------------------------------
# measuring


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of a non-empty sequence."""
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Keep the profiler's native start/stop lines off the user's terminal."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(call: Callable[[], Any]) -> int | None:
    """Peak bytes the call holds on the CPU allocator, from the profiler's memory events.

    None when the profiler cannot run here (another profiler is active, say);
    the call still runs, so it still counts as a warm-up.
    """
    from torch.profiler import ProfilerActivity, profile

    try:
        with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            call()
    except RuntimeError:
        call()
        return None
    deltas = []
    for event in prof.events():
        if event.name == "[memory]":
            deltas.append((event.time_range.start, event.cpu_memory_usage))
        elif event.self_cpu_memory_usage:
            deltas.append((event.time_range.start, event.self_cpu_memory_usage))
    live = peak = 0
    for _, delta in sorted(deltas, key=lambda d: d[0]):
        live += delta
        peak = max(peak, live)
    return int(peak)


def _cuda_peak_bytes(call: Callable[[], Any], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    call()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def _capture_graph(call: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """A CUDA graph replay of ``call`` (its inputs are baked in)."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):  # settle allocations before capture
            call()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


def measure(
    fn: Callable[[], Any],
    *,
    variant: str,
    batch: int,
    target: str = "",
    input_hw: tuple[int, int] = (0, 0),
    device: torch.device | str = "cpu",
    repeat: int = 10,
    warmup: int = 2,
    budget_s: float | None = None,
    precision: Precision | str = Precision.FP32,
    cuda_graph: bool = False,
    memory: bool = True,
) -> Measurement:
    """Time ``fn()`` (no arguments) like torch.utils.benchmark.Timer, and return a frozen Measurement.

    ``fn`` runs under ``torch.no_grad`` and, for fp16/bf16, autocast. Warm-up
    runs come first (the first one also measures peak memory), then up to
    ``repeat`` timed runs; once ``budget_s`` is spent the runs stop early
    (always at least one warm-up when asked for, and one timed run). On CUDA
    each run is timed with CUDA events; ``cuda_graph`` replays a captured
    graph instead (falls back to eager with a note when capture fails).
    """
    dev = torch.device(device)
    prec = Precision(precision)
    on_cuda = dev.type == "cuda"
    autocast_dtype = {Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}.get(prec)

    def call() -> Any:
        with (
            torch.no_grad(),
            torch.autocast(dev.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None),
        ):
            return fn()

    note = ""
    runner: Callable[[], Any] = call
    used_graph = False
    if cuda_graph and on_cuda:
        try:
            runner = _capture_graph(call, dev)
            used_graph = True
        except Exception as exc:  # capture refuses many ops; time eagerly instead
            note = f"CUDA graph capture failed, timed eagerly: {type(exc).__name__}"

    memory_bytes: int | None = None
    memory_kind = "none"
    warm = 0
    start = time.perf_counter()
    if memory:
        memory_bytes = _cuda_peak_bytes(runner, dev) if on_cuda else _cpu_peak_bytes(runner)
        if memory_bytes is not None:
            memory_kind = "cuda-peak-allocated" if on_cuda else "cpu-peak-allocated"
        warm += 1  # a full call: it warms up as well
    while warm < warmup and (budget_s is None or warm == 0 or time.perf_counter() - start < budget_s):
        runner()
        warm += 1
    if on_cuda:
        torch.cuda.synchronize(dev)

    times: list[float] = []
    timed_start = time.perf_counter()
    while len(times) < repeat:
        if on_cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            runner()
            end.record()
            end.synchronize()
            times.append(float(begin.elapsed_time(end)))
        else:
            t0 = time.perf_counter()
            runner()
            times.append((time.perf_counter() - t0) * 1000.0)
        if budget_s is not None and time.perf_counter() - timed_start >= budget_s:
            break
    p50 = statistics.median(times)
    return Measurement(
        variant=variant,
        target=target,
        input_hw=(int(input_hw[0]), int(input_hw[1])),
        batch=batch,
        device=dev.type,
        precision=prec.value,
        times_ms=tuple(round(t, 4) for t in times),
        warmup=warm,
        p50_ms=p50,
        p90_ms=_percentile(times, 90),
        mean_ms=statistics.fmean(times),
        min_ms=min(times),
        throughput=batch / (p50 / 1000.0) if p50 > 0 else float("inf"),
        memory_bytes=memory_bytes,
        memory_kind=memory_kind,
        cuda_graph=used_graph,
        note=note,
    )


# ---------------------------------------------------------------------------------------------
# the benchmark


@dataclass
class _Target:
    """One target built for the benchmark (mutable working state, never returned)."""

    name: str
    model: Any  # the mmpose estimator with the planned adapter
    fused: Any  # adaptkit.fuse(model)
    adapter: ShapeAdapter  # model.neck
    naive_head: nn.Module
    resize_first: nn.Module | None  # the adapter in resize-then-project order; None when it does not resize
    plan: Any


def _target_name(spec: str) -> str:
    for short, config in TARGETS.items():
        if spec.lower() in (short, config):
            return short
    stem = Path(spec.split("::")[-1]).stem
    return stem or spec


def _build_target(source: str, spec: str, workdir: Path, device: torch.device, channels_last: bool) -> _Target:
    from adaptkit.core.adapter import ShapeAdapter
    from adaptkit.core.fusion import fuse, plan_fusion
    from adaptkit.mm.fragments import wrap_config
    from adaptkit.mm.openmmlab import build_model, load_config

    config = _resolve_target(spec)
    name = _target_name(spec)
    fragment = workdir / f"{_slug(name)}.py"
    wrap_config(source, config, fragment, force=True)
    cfg = load_config(fragment)
    model = build_model(cfg.model)
    model.eval()
    model.to(device)
    adapter = model.neck
    assert isinstance(adapter, ShapeAdapter)  # wrap_config always emits one
    head_cfg = cfg.model.head.to_dict() if hasattr(cfg.model.head, "to_dict") else dict(cfg.model.head)
    head_cfg["in_channels"] = adapter.in_channels  # the hand fix: change in_channels, interpolate later
    naive_head = build_model(head_cfg)
    naive_head.eval()
    naive_head.to(device)
    resize_first = None
    if adapter.resizes and adapter.proj is not None:
        resize_first = ShapeAdapter(
            select=adapter.select,
            in_channels=adapter.in_channels,
            out_channels=adapter.out_channels,
            feature_stride=adapter.feature_stride,
            target_stride=adapter.target_stride,
            layout=adapter.layout.value,
            project_first=False,
            prefix_tokens=adapter.prefix_tokens,
            grid=adapter.grid,
        ).to(device)
        resize_first.load_state_dict(adapter.state_dict())
        resize_first.eval()
    fused = fuse(model, channels_last=channels_last)
    return _Target(name, model, fused, adapter, naive_head, resize_first, plan_fusion(model))


def _replace_at(obj: Any, path: str, value: torch.Tensor) -> Any:
    """A copy of a nested list/tuple/dict output with the tensor at ``path`` replaced."""
    if path == "":
        return value
    key, _, rest = path.partition(".")
    if isinstance(obj, dict):
        return {k: (_replace_at(v, rest, value) if str(k) == key else v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [(_replace_at(v, rest, value) if str(i) == key else v) for i, v in enumerate(obj)]
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):
            return type(obj)(*items)
        return type(obj)(items)
    raise BenchError(f"cannot rebuild the backbone output at {path!r} for the benchmark ({type(obj).__name__})")


@dataclass
class _Inputs:
    """Random inputs for one target, input size and batch."""

    image: torch.Tensor
    feats: Any  # the backbone's output structure with the selected feature at this batch
    feature: torch.Tensor  # the selected feature as an NCHW map
    head_input: torch.Tensor  # what the stock head expects
    out_hw: tuple[int, int]  # the heatmap size the planned model gives


@dataclass(frozen=True)
class _Shapes:
    feats: Any  # batch-1 backbone output
    head_input: tuple[int, ...]
    out_hw: tuple[int, int]


def _shapes(target: _Target, hw: tuple[int, int], device: torch.device) -> _Shapes:
    """Run the target once at batch 1 to learn the shapes each variant takes; BenchError when it cannot run."""
    from adaptkit.core.tree import select

    model, adapter = target.model, target.adapter
    image = torch.randn(1, 3, hw[0], hw[1], device=device)
    try:
        with torch.no_grad():
            feats = model.backbone(image)
            feature = adapter.to_map(select(feats, adapter.select))
            head_input = adapter(feats)[-1]
            out = model.head((head_input,))
    except (RuntimeError, ValueError, KeyError, IndexError) as exc:
        cause = " ".join(str(exc).split())[:160]
        raise BenchError(
            f"the model cannot run at input {hw[0]}x{hw[1]} ({cause}); try a multiple of the backbone's largest stride"
        ) from None
    stride = adapter.feature_stride
    if (feature.shape[-2] * stride[0], feature.shape[-1] * stride[1]) != (float(hw[0]), float(hw[1])):
        raise BenchError(
            f"input {hw[0]}x{hw[1]} is not a multiple of the feature stride {stride[0]:g}x{stride[1]:g}; pick one that is"
        )
    return _Shapes(feats, tuple(head_input.shape[1:]), (int(out.shape[-2]), int(out.shape[-1])))


def _inputs(target: _Target, shapes: _Shapes, hw: tuple[int, int], batch: int, device: torch.device) -> _Inputs:
    from adaptkit.core.tree import select

    adapter = target.adapter
    raw = select(shapes.feats, adapter.select)
    feature_raw = torch.randn((batch, *raw.shape[1:]), device=device)
    feats = _replace_at(shapes.feats, adapter.select, feature_raw)
    return _Inputs(
        image=torch.randn(batch, 3, hw[0], hw[1], device=device),
        feats=feats,
        feature=adapter.to_map(feature_raw),
        head_input=torch.randn((batch, *shapes.head_input), device=device),
        out_hw=shapes.out_hw,
    )


def _calls(target: _Target, x: _Inputs, estimator: bool) -> list[tuple[Variant, Callable[[], Any]]]:
    from adaptkit.core.adapter import resize_to

    model, fused = target.model, target.fused
    calls: list[tuple[Variant, Callable[[], Any]]] = [
        (Variant.HEAD, lambda: model.head((x.head_input,))),
        (Variant.NAIVE_HEAD, lambda: resize_to(target.naive_head((x.feature,)), x.out_hw)),
    ]
    if target.resize_first is not None:
        resize_first = target.resize_first
        calls.append((Variant.NAIVE_RESIZE, lambda: model.head(resize_first(x.feats))))
    calls += [
        (Variant.PLANNED, lambda: model.head(model.neck(x.feats))),
        (Variant.FUSED, lambda: fused.head(fused.neck(x.feats))),
    ]
    if estimator:
        calls += [
            (Variant.ESTIMATOR, lambda: model(x.image, None, mode="tensor")),
            (Variant.ESTIMATOR_FUSED, lambda: fused(x.image, None, mode="tensor")),
        ]
    return calls


def _estimator_at(request: BenchRequest, hw: tuple[int, int], batch: int) -> bool:
    if not request.estimator:
        return False
    if request.quick:  # the whole estimator only where it is cheap
        return batch == min(request.batches) and hw == min(request.inputs, key=lambda s: s[0] * s[1])
    return True


def _count(request: BenchRequest, targets: Sequence[_Target]) -> int:
    """How many measurements ``run_bench`` will make (for the progress bar)."""
    per_target = [len(NECK_HEAD_VARIANTS) - (t.resize_first is None) for t in targets]
    total = 0
    for hw in request.inputs:
        for batch in request.batches:
            est = len(ESTIMATOR_VARIANTS) if _estimator_at(request, hw, batch) else 0
            total += sum(n + est for n in per_target)
    return total


def run_bench(
    request: BenchRequest,
    progress: Callable[[str, int, int], None] | None = None,
) -> BenchResult:
    """Build every target with ``request.source`` and time every variant; returns the records.

    ``progress(description, done, total)`` is called before each measurement
    and once at the end (description "done"). Raises BenchError (or the
    adaptkit error of the stage that failed) before any timing when a target
    cannot be built or run at a requested size.
    """
    saved_threads = torch.get_num_threads()
    if request.threads is not None:
        torch.set_num_threads(request.threads)
    try:
        return _run(request, progress)
    finally:
        torch.set_num_threads(saved_threads)


def _run(request: BenchRequest, progress: Callable[[str, int, int], None] | None) -> BenchResult:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    clock = time.perf_counter()
    device = torch.device(request.device.value)
    env = environment(request.device)
    report = progress or (lambda *_: None)
    targets: list[_Target] = []
    with tempfile.TemporaryDirectory(prefix="adaptkit-bench-") as tmp:
        for spec in request.targets:
            report(f"building {request.source} -> {_target_name(spec)}", 0, 0)
            targets.append(_build_target(request.source, spec, Path(tmp), device, request.channels_last))
    shapes = {(t.name, hw): _shapes(t, hw, device) for t in targets for hw in request.inputs}
    total = _count(request, targets)
    done = 0
    measurements: list[Measurement] = []
    for hw in request.inputs:
        for batch in request.batches:
            for target in targets:
                inputs = _inputs(target, shapes[(target.name, hw)], hw, batch, device)
                for variant, fn in _calls(target, inputs, _estimator_at(request, hw, batch)):
                    report(f"{target.name} {hw[0]}x{hw[1]} b{batch} {variant.value}", done, total)
                    try:
                        m = measure(
                            fn,
                            variant=variant.value,
                            target=target.name,
                            input_hw=hw,
                            batch=batch,
                            device=device,
                            repeat=request.repeat,
                            warmup=request.warmup,
                            budget_s=request.budget_s,
                            precision=request.precision,
                            cuda_graph=request.cuda_graphs,
                        )
                    except torch.cuda.OutOfMemoryError:
                        m = _skipped(variant, target.name, hw, batch, request, "out of GPU memory")
                    measurements.append(m)
                    done += 1
                del inputs
    report("done", total, total)
    notes = []
    if request.quick:
        notes.append("quick: the whole estimator was timed only at the smallest batch and input size")
    if any(len(m.times_ms) < request.repeat for m in measurements):
        notes.append(
            f"calls slower than the {request.budget_s:g} s budget were timed fewer than {request.repeat} times"
        )
    return BenchResult(
        request=request,
        environment=env,
        measurements=tuple(measurements),
        fusion=tuple((t.name, t.plan) for t in targets),
        started=started,
        seconds=time.perf_counter() - clock,
        notes=tuple(notes),
    )


def _skipped(
    variant: Variant, target: str, hw: tuple[int, int], batch: int, request: BenchRequest, why: str
) -> Measurement:
    nan = float("nan")
    return Measurement(
        variant=variant.value,
        target=target,
        input_hw=hw,
        batch=batch,
        device=request.device.value,
        precision=request.precision.value,
        times_ms=(),
        warmup=0,
        p50_ms=nan,
        p90_ms=nan,
        mean_ms=nan,
        min_ms=nan,
        throughput=nan,
        memory_bytes=None,
        memory_kind="none",
        cuda_graph=False,
        note=why,
    )


# ---------------------------------------------------------------------------------------------
# figures


def summarize(measurements: Sequence[Measurement]) -> tuple[Summary, ...]:
    """Per target, input size and batch: fused vs planned speed-up and the adapter's share of end-to-end time."""
    table: dict[tuple[str, tuple[int, int], int], dict[str, float]] = {}
    for m in measurements:
        table.setdefault((m.target, m.input_hw, m.batch), {})[m.variant] = m.p50_ms
    out: list[Summary] = []
    for (target, hw, batch), row in table.items():
        needed = (Variant.HEAD.value, Variant.PLANNED.value, Variant.FUSED.value)
        if not all(k in row and not math.isnan(row[k]) for k in needed):
            continue
        head, planned, fused = (row[k] for k in needed)
        est = row.get(Variant.ESTIMATOR.value)
        est_fused = row.get(Variant.ESTIMATOR_FUSED.value)
        naive = row.get(Variant.NAIVE_HEAD.value)
        out.append(
            Summary(
                target=target,
                input_hw=hw,
                batch=batch,
                head_ms=head,
                planned_ms=planned,
                fused_ms=fused,
                naive_head_ms=naive,
                naive_resize_ms=row.get(Variant.NAIVE_RESIZE.value),
                fused_speedup=planned / fused,
                naive_speedup=naive / fused if naive is not None else None,
                estimator_ms=est,
                estimator_fused_ms=est_fused,
                adapter_ms_planned=planned - head,
                adapter_ms_fused=fused - head,
                share_planned=(planned - head) / est if est else None,
                share_fused=(fused - head) / est_fused if est_fused else None,
            )
        )
    return tuple(out)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def result_document(result: BenchResult) -> dict[str, Any]:
    """The result as plain JSON data (what ``write_json`` writes)."""
    return _plain(
        {
            "schema": 1,
            "started": result.started,
            "seconds": round(result.seconds, 2),
            "environment": asdict(result.environment),
            "request": asdict(result.request),
            "memory": "CUDA: torch.cuda.max_memory_allocated over one call minus the bytes allocated before it. "
            "CPU: peak bytes the call holds on the CPU allocator (torch.profiler memory events), not process RSS.",
            "fusion": {name: asdict(plan) for name, plan in result.fusion},
            "summary": [asdict(s) for s in summarize(result.measurements)],
            "measurements": [asdict(m) for m in result.measurements],
            "notes": list(result.notes),
        }
    )


def write_json(result: BenchResult, path: str | Path) -> Path:
    """Write the result document; the folder is created when missing."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result_document(result), indent=1) + "\n")
        tmp.replace(out)
    except OSError as exc:
        raise BenchError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    return out


def write_plot(result: BenchResult, path: str | Path) -> Path:
    """Latency (p50) against batch size, one line per variant, one panel per target and input size."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    targets = list(dict.fromkeys(m.target for m in result.measurements))
    inputs = list(dict.fromkeys(m.input_hw for m in result.measurements))
    if not targets:
        raise BenchError("nothing was measured, so there is nothing to plot")
    fig = Figure(figsize=(5.0 * len(inputs), 3.6 * len(targets)), layout="constrained")
    axes = fig.subplots(len(targets), len(inputs), squeeze=False)
    colors = {v.value: f"C{i}" for i, v in enumerate(Variant)}  # one colour per variant in every panel
    batches = sorted({m.batch for m in result.measurements})
    for r, target in enumerate(targets):
        for c, hw in enumerate(inputs):
            ax = axes[r][c]
            for variant in Variant:
                points = sorted(
                    (m.batch, m.p50_ms)
                    for m in result.measurements
                    if m.target == target
                    and m.input_hw == hw
                    and m.variant == variant.value
                    and not math.isnan(m.p50_ms)
                )
                if points:
                    xs, ys = [p[0] for p in points], [p[1] for p in points]
                    ax.plot(xs, ys, marker="o", color=colors[variant.value], label=variant.value)
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.set_yscale("log")
            ax.set_title(f"{target}, {hw[0]}x{hw[1]}", fontsize=10)
            ax.set_xlabel("batch")
            ax.set_ylabel("latency p50 (ms)")
            ax.grid(True, which="both", alpha=0.3)
    seen: dict[str, Any] = {}
    for ax in axes.flat:  # a legend with every variant drawn anywhere, in Variant order
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    order = [v.value for v in Variant if v.value in seen]
    if order:
        fig.legend([seen[k] for k in order], order, loc="outside right upper", fontsize=8)
    env = result.environment
    fig.suptitle(
        f"{result.request.source}: {env.device_name} ({env.device}, {env.threads} threads, {result.request.precision.value})",
        fontsize=10,
    )
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    except OSError as exc:
        raise BenchError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    return out
