"""Peak memory of one call: the CUDA allocator's peak on a GPU, the CPU allocator's from profiler events.

On CUDA, ``torch.cuda.max_memory_allocated`` over one call, minus what was
allocated before it. On the CPU, the peak of the bytes the call allocates and
still holds, from ``torch.profiler``'s memory events in time order (the CPU
allocator's view, not the process RSS).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["cpu_peak_bytes", "cuda_peak_bytes"]


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


def cpu_peak_bytes(call: Callable[[], Any]) -> int | None:
    """Peak bytes the call holds on the CPU allocator; None when the profiler cannot run (the call still runs)."""
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


def cuda_peak_bytes(call: Callable[[], Any], device: torch.device) -> int:
    """Bytes allocated on ``device`` at the call's peak, beyond what was allocated before it."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    call()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)
