"""Timing and environment: one call timed until its spread is small, with the spread and the machine kept.

The rule is torch.utils.benchmark's ``adaptive_autorange``: time blocks of
calls until the interquartile range is under ``threshold`` of the median (at
least four blocks) or the time budget runs out. On the CPU each block is a
stdlib ``timeit`` block (what ``Timer.timeit`` wraps); on CUDA it is timed with CUDA events after a
synchronisation; both land in torch's own ``Measurement``. Timer's
``adaptive_autorange`` itself is not used: it stops at its time limit after
a single block, which leaves a slow call with no spread at all. A cell is
flagged when its spread stays above the threshold, when it has fewer than
four samples, or when the run started on a machine already loaded above its
core count (a CPU run only: other processes barely touch GPU timings).
Peak memory is ``adaptkit.bench.memory``'s; speed-ups are timed in pairs by
``adaptkit.bench.pairing``.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import platform
import re
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from adaptkit.bench.memory import cpu_peak_bytes, cuda_peak_bytes

if TYPE_CHECKING:
    from torch.utils.benchmark import Measurement as TorchMeasurement

__all__ = [
    "Device",
    "Precision",
    "Environment",
    "Measurement",
    "environment",
    "measure",
    "cpu_count",
    "DEFAULT_THRESHOLD",
    "MIN_SAMPLES",
    "prepare",
    "block_clock",
    "calls_per_block",
    "quantile",
    "spread_flag",
]

#: a cell whose interquartile range stays above this fraction of its median is flagged
DEFAULT_THRESHOLD = 0.1
#: adaptive_autorange looks at the spread only from this many blocks on
MIN_SAMPLES = 4
#: a block of calls lasts at least this long, so the clock's own cost is negligible (Timer's choice)
MIN_BLOCK_S = 0.05


class Device(str, enum.Enum):
    CPU = "cpu"
    CUDA = "cuda"
    AUTO = "auto"


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"  # autocast
    BF16 = "bf16"  # autocast


@dataclass(frozen=True)
class Environment:
    device: str  # "cpu" or "cuda"
    device_name: str
    threads: int  # torch.get_num_threads()
    cores: int  # CPU cores this process may run on
    load_average: tuple[float, float, float] | None  # 1, 5, 15 min, at the start of the run
    loaded: bool  # the 1-minute load was above the core count at the start: every CPU cell is flagged
    torch_version: str
    python_version: str
    platform: str


@dataclass(frozen=True)
class Measurement:
    """One variant timed at one batch and input size: median and spread per call, in milliseconds."""

    variant: str
    target: str
    input_hw: tuple[int, int]
    batch: int
    device: str
    precision: str
    median_ms: float
    iqr_ms: float  # interquartile range of the per-call times
    p25_ms: float
    p75_ms: float
    samples: int  # timed blocks
    calls_per_sample: int  # calls in each block
    times_ms: tuple[float, ...]  # per-call time of each block
    per_image_ms: float  # median / batch
    throughput: float  # images per second, from the median
    memory_bytes: int | None  # peak, see memory_kind
    memory_kind: str  # "cuda-peak-allocated", "cpu-peak-allocated" or "none"
    cuda_graph: bool
    flags: tuple[str, ...]  # why this cell's figure is not to be trusted; empty when it is
    measurement: TorchMeasurement | None  # torch.utils.benchmark's record of the raw block times
    note: str = ""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def _load_average() -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):
        return None
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def environment(device: Device | str = Device.CPU) -> Environment:
    """Where the numbers come from: device name, threads, cores, the load at the start, versions."""
    kind = Device(device) if not isinstance(device, Device) else device
    if kind is Device.AUTO:
        kind = Device.CUDA if torch.cuda.is_available() else Device.CPU
    name = torch.cuda.get_device_name() if kind is Device.CUDA else _cpu_name()
    load, cores = _load_average(), cpu_count()
    return Environment(
        device=kind.value,
        device_name=name,
        threads=torch.get_num_threads(),
        cores=cores,
        load_average=load,
        loaded=load is not None and load[0] > cores,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        platform=platform.platform(terse=True),
    )


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


# ---------------------------------------------------------------------------------------------
# CUDA


def _capture_graph(call: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """A CUDA graph replay of ``call`` (its inputs are baked in)."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):  # settle allocations and lazy initialisation before capture
            call()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


def _cuda_block(runner: Callable[[], Any], number: int, device: torch.device) -> float:
    """Seconds for ``number`` calls, from CUDA events around the block, after a synchronisation."""
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    begin.record()
    for _ in range(number):
        runner()
    end.record()
    end.synchronize()
    return float(begin.elapsed_time(end)) / 1000.0


# ---------------------------------------------------------------------------------------------
# the rule


def _benchmark_utils() -> Any:
    """torch.utils.benchmark, imported on first use without its note that there is no CUDA compiler."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import torch.utils.benchmark as benchmark
    finally:
        logger.setLevel(level)
    return benchmark


def _autorange(
    block: Callable[[int], float], threshold: float, budget_s: float, label: str, description: str
) -> TorchMeasurement:
    """adaptive_autorange's rule: blocks of calls lasting at least MIN_BLOCK_S, timed until the IQR is
    under ``threshold`` of the median (from MIN_SAMPLES blocks on) or ``budget_s`` is spent; at least
    MIN_SAMPLES blocks either way, so every cell has a spread."""
    benchmark = _benchmark_utils()
    number = calls_per_block(block(1))  # also a second warm-up
    spec = benchmark.utils.common.TaskSpec(
        stmt=label, setup="", num_threads=torch.get_num_threads(), label=label, description=description
    )
    times: list[float] = []
    while True:
        times.append(block(number))
        if len(times) < MIN_SAMPLES:
            continue
        if benchmark.Measurement(number, times, spec).meets_confidence(threshold) or sum(times) > budget_s:
            break
    return benchmark.Measurement(number, times, spec)  # type: ignore[no-any-return]


def prepare(
    fn: Callable[[], Any], dev: torch.device, prec: Precision, cuda_graph: bool
) -> tuple[Callable[[], Any], bool, str]:
    """``fn`` as it is timed: under no_grad and, for fp16/bf16, autocast; replayed from a CUDA graph when
    asked and capture works. Returns (runner, whether a graph is used, a note when capture failed)."""
    autocast_dtype = {Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}.get(prec)

    def call() -> Any:
        with (
            torch.no_grad(),
            torch.autocast(dev.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None),
        ):
            return fn()

    if cuda_graph and dev.type == "cuda":
        try:
            return _capture_graph(call, dev), True, ""
        except Exception as exc:  # capture refuses many ops; time eagerly instead
            return call, False, f"CUDA graph capture failed, timed eagerly: {type(exc).__name__}"
    return call, False, ""


def block_clock(runner: Callable[[], Any], dev: torch.device) -> Callable[[int], float]:
    """Seconds for a block of ``n`` calls: CUDA events after a synchronisation, or the stdlib ``timeit``.

    torch's ``Timer.timeit`` is that same stdlib timer (perf_counter, garbage collection off) plus two
    untimed calls before every block, which triples the cost of a block of one slow call; the blocks
    still land in torch's ``Measurement``.
    """
    if dev.type == "cuda":
        return lambda n: _cuda_block(runner, n, dev)
    timer = timeit.Timer(runner)
    return lambda n: float(timer.timeit(n))


def calls_per_block(seconds_per_call: float) -> int:
    """Calls in one block so that the block lasts at least MIN_BLOCK_S (Timer's own rule)."""
    if seconds_per_call >= MIN_BLOCK_S:
        return 1
    return min(1_000_000, math.ceil(MIN_BLOCK_S / max(seconds_per_call, 1e-7)))


# ---------------------------------------------------------------------------------------------
# measure


def quantile(values: Sequence[float], q: float) -> float:
    data = sorted(values)
    pos = (len(data) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def spread_flag(p25: float, median: float, p75: float, threshold: float) -> str:
    """'spread 12% > 10%' when the quartile range is over ``threshold`` of the median, else ''; one decimal
    where whole percents would print the threshold twice (10.2% > 10%)."""
    if median <= 0 or (p75 - p25) / median <= threshold:
        return ""
    spread, limit = 100 * (p75 - p25) / median, 100 * threshold
    digits = 1 if round(spread) <= round(limit) else 0
    return f"spread {spread:.{digits}f}% > {limit:.0f}%"


def measure(
    fn: Callable[[], Any],
    *,
    variant: str,
    batch: int,
    target: str = "",
    input_hw: tuple[int, int] = (0, 0),
    device: torch.device | str = "cpu",
    threshold: float = DEFAULT_THRESHOLD,
    budget_s: float = 2.0,
    precision: Precision | str = Precision.FP32,
    cuda_graph: bool = False,
    memory: bool = True,
    loaded: bool = False,
) -> Measurement:
    """Time ``fn()`` until the IQR is under ``threshold`` of the median or ``budget_s`` is spent.

    At least ``MIN_SAMPLES`` blocks are timed whatever the budget, so every
    cell has a spread; a slow call therefore costs four calls and a warm-up.
    ``fn`` runs under ``torch.no_grad`` and, for fp16/bf16, autocast. The
    first call measures peak memory and warms up; ``loaded`` (the machine
    was busy at the start) flags the cell.
    """
    dev = torch.device(device)
    prec = Precision(precision)
    on_cuda = dev.type == "cuda"
    runner, used_graph, note = prepare(fn, dev, prec, cuda_graph)
    memory_bytes: int | None = None
    memory_kind = "none"
    if memory:
        memory_bytes = cuda_peak_bytes(runner, dev) if on_cuda else cpu_peak_bytes(runner)
        if memory_bytes is not None:
            memory_kind = "cuda-peak-allocated" if on_cuda else "cpu-peak-allocated"
    else:
        runner()
    label = f"{target} {variant} b{batch}".strip()
    clock = block_clock(runner, dev)
    timed = _autorange(clock, threshold, budget_s, label, "cuda events" if on_cuda else "timeit")
    return _record(timed, variant, target, input_hw, batch, dev, prec, threshold, loaded and not on_cuda,
                   memory_bytes, memory_kind, used_graph, note)  # fmt: skip


def _record(
    timed: TorchMeasurement,
    variant: str,
    target: str,
    input_hw: tuple[int, int],
    batch: int,
    dev: torch.device,
    prec: Precision,
    threshold: float,
    loaded: bool,
    memory_bytes: int | None,
    memory_kind: str,
    used_graph: bool,
    note: str,
) -> Measurement:
    times = [t * 1000.0 for t in timed.times]
    median = quantile(times, 0.5)
    p25, p75 = quantile(times, 0.25), quantile(times, 0.75)
    flags = []
    if len(times) < MIN_SAMPLES:
        flags.append(f"{len(times)} samples")
    elif spread := spread_flag(p25, median, p75, threshold):
        flags.append(spread)
    if loaded:
        flags.append("load at start")
    return Measurement(
        variant=variant,
        target=target,
        input_hw=(int(input_hw[0]), int(input_hw[1])),
        batch=batch,
        device=dev.type,
        precision=prec.value,
        median_ms=median,
        iqr_ms=p75 - p25,
        p25_ms=p25,
        p75_ms=p75,
        samples=len(times),
        calls_per_sample=int(timed.number_per_run),
        times_ms=tuple(round(t, 5) for t in times),
        per_image_ms=median / batch,
        throughput=batch / (median / 1000.0) if median > 0 else float("inf"),
        memory_bytes=memory_bytes,
        memory_kind=memory_kind,
        cuda_graph=used_graph,
        flags=tuple(flags),
        measurement=timed,
        note=note,
    )
