"""A benchmark request: every option checked once, at the boundary, before anything is built or timed.

Bad input is one ``BenchError`` line (the CLI exits 2): an unknown device,
CUDA without a GPU, an empty or zero batch, an input smaller than the
largest stride, a target config that does not exist.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from adaptkit.bench.pairing import PROCESSES
from adaptkit.bench.timing import DEFAULT_THRESHOLD, Device, Precision
from adaptkit.core.records import parse_enum
from adaptkit.errors import BenchError
from adaptkit.mm.stock import RTMPOSE_M, STOCK_CONFIGS

__all__ = ["BenchRequest", "TARGETS", "make_request", "parse_batches", "parse_inputs", "resolve_target"]

#: short names for the stock targets the benchmark knows
TARGETS: dict[str, str] = {**STOCK_CONFIGS, "rtmpose": RTMPOSE_M}  # RTMCC: a head that is not a heatmap
DEFAULT_SOURCE = "sctnet-b"
DEFAULT_BATCHES = (1, 8, 32)
DEFAULT_INPUTS = ((256, 192), (640, 640))
QUICK_BATCHES = (1, 8)
QUICK_INPUTS = ((256, 192),)
_MAX_BATCH = 4096
_MAX_SIDE = 8192
_MIN_SIDE = 32  # the largest stride of common backbones: a smaller input has no feature map to adapt


@dataclass(frozen=True)
class BenchRequest:
    """A checked benchmark request; build it with ``make_request``."""

    source: str = DEFAULT_SOURCE
    targets: tuple[str, ...] = tuple(TARGETS)
    device: Device = Device.CPU
    batches: tuple[int, ...] = DEFAULT_BATCHES
    inputs: tuple[tuple[int, int], ...] = DEFAULT_INPUTS
    threshold: float = DEFAULT_THRESHOLD  # stop timing a cell once its IQR is under this fraction of the median
    budget_s: float = 2.0  # per cell: stop once this is spent (after the minimum samples)
    precision: Precision = Precision.FP32
    cuda_graphs: bool = False
    channels_last: bool = False
    estimator: bool = True  # time the whole estimator too
    quick: bool = False
    threads: int | None = None  # CPU threads for torch; None keeps torch's default
    pair_processes: int = PROCESSES  # fresh processes the fused vs planned pairs are timed in (CPU); 0: this one


# ---------------------------------------------------------------------------------------------
# options


def parse_batches(value: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,8,32"`` -> (1, 8, 32); BenchError for anything else."""
    items = list(re.split(r"[,\s]+", value.strip())) if isinstance(value, str) else list(value)
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
    items: list[Any] = [p for p in re.split(r"[,\s]+", value.strip()) if p] if isinstance(value, str) else list(value)
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
        if not all(_MIN_SIDE <= s <= _MAX_SIDE for s in hw):
            raise BenchError(f"input size {item!r} must have sides from {_MIN_SIDE} to {_MAX_SIDE} pixels")
        if hw not in out:
            out.append(hw)
    return tuple(out)


def _resolve_device(value: str | Device) -> Device:
    try:
        device = parse_enum(Device, value, "device")
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if device is Device.AUTO:
        return Device.CUDA if torch.cuda.is_available() else Device.CPU
    if device is Device.CUDA and not torch.cuda.is_available():
        raise BenchError("--device cuda, but torch sees no CUDA device here; use --device cpu or auto")
    return Device(device)


def resolve_target(name: str) -> str:
    return TARGETS.get(name.lower(), name)


def make_request(
    source: str = DEFAULT_SOURCE,
    targets: Sequence[str] | None = None,
    *,
    device: str | Device = Device.AUTO,
    batches: str | Sequence[int] | None = None,
    inputs: str | Sequence[Sequence[int]] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    budget_s: float | None = None,
    precision: str | Precision = Precision.FP32,
    cuda_graphs: bool = False,
    channels_last: bool = False,
    estimator: bool = True,
    quick: bool = False,
    threads: int | None = None,
    pair_processes: int = PROCESSES,
) -> BenchRequest:
    """Check every option before any work; BenchError (one line) for the first bad one.

    ``quick``: batches 1 and 8 at 256x192 unless given, a 0.5 s budget per
    cell, and the whole estimator only at the smallest batch.
    """
    resolved = _resolve_device(device)
    try:
        prec = Precision(parse_enum(Precision, precision, "dtype"))
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if prec is Precision.FP16 and resolved is Device.CPU:
        raise BenchError("fp16 autocast needs a CUDA device; use --dtype bf16 or fp32 on the CPU")
    if cuda_graphs and resolved is not Device.CUDA:
        raise BenchError("--cuda-graphs needs a CUDA device; drop it on the CPU")
    budget = budget_s if budget_s is not None else (0.5 if quick else 2.0)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < math.inf:
        raise BenchError(f"--budget must be a positive number of seconds, got {budget!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise BenchError(f"--threshold must be a fraction between 0 and 1, got {threshold!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise BenchError(f"--threads must be a whole number of at least 1, got {threads!r}")
    if isinstance(pair_processes, bool) or not isinstance(pair_processes, int) or not 0 <= pair_processes <= 16:
        raise BenchError(f"--pair-processes must be a whole number from 0 to 16, got {pair_processes!r}")
    if not source or not isinstance(source, str):
        raise BenchError("the backbone SOURCE is empty; name one, e.g. sctnet-b")
    names = tuple(targets) if targets else tuple(TARGETS)
    from adaptkit.mm.openmmlab import config_path

    for name in names:
        config_path(resolve_target(name))  # ConfigError now, not after minutes of building
    default_batches, default_inputs = (QUICK_BATCHES, QUICK_INPUTS) if quick else (DEFAULT_BATCHES, DEFAULT_INPUTS)
    return BenchRequest(
        source=source,
        targets=names,
        device=resolved,
        batches=parse_batches(batches if batches is not None else default_batches),
        inputs=parse_inputs(inputs if inputs is not None else default_inputs),
        threshold=float(threshold),
        budget_s=float(budget),
        precision=prec,
        cuda_graphs=cuda_graphs,
        channels_last=channels_last,
        estimator=estimator,
        quick=quick,
        threads=threads,
        pair_processes=pair_processes,
    )
