"""Speed-ups timed in pairs, so that a machine that drifts slows both sides alike.

Timing two variants one after the other and dividing their medians lets
anything that changed in between (another process, a frequency step, a cold
cache) into the ratio, and neither cell's spread shows it: two runs then
disagree by more than either run's range. Here the two calls alternate block
for block: each round times one block of the slow call and one of the fast
call, in reversed order every other round, and gives one ratio (slow / fast
per call). The speed-up is the median of the round ratios and its range their
quartiles. Rounds go on, in pairs, until the quartile range is under
``threshold`` of the median (from ``MIN_ROUNDS`` on) or the budget is spent,
torch.utils.benchmark's adaptive rule applied to the ratio itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from adaptkit.bench.timing import Precision, block_clock, calls_per_block, prepare, quantile

__all__ = ["MIN_ROUNDS", "SpeedUp", "time_speedup"]

#: rounds before the spread is looked at; always an even number, so each order runs equally often
MIN_ROUNDS = 6


@dataclass(frozen=True)
class SpeedUp:
    """How many times faster ``fast`` ran than ``slow`` (per call), from rounds timed back to back."""

    target: str
    input_hw: tuple[int, int]
    batch: int
    slow: str  # variant names
    fast: str
    median: float  # median of the round ratios
    p25: float
    p75: float
    rounds: int
    calls_per_block: tuple[int, int]  # (slow, fast)
    ratios: tuple[float, ...]  # one per round, in the order timed
    flags: tuple[str, ...]  # why the figure is not to be trusted; empty when it is


def time_speedup(
    slow: Callable[[], Any],
    fast: Callable[[], Any],
    *,
    slow_name: str,
    fast_name: str,
    target: str = "",
    input_hw: tuple[int, int] = (0, 0),
    batch: int = 1,
    device: torch.device | str = "cpu",
    precision: Precision | str = Precision.FP32,
    cuda_graph: bool = False,
    threshold: float = 0.1,
    budget_s: float = 2.0,
    loaded: bool = False,
) -> SpeedUp:
    """Time ``slow`` against ``fast`` in alternating blocks; see the module docstring for the rule.

    Each call runs once to warm up and once to size its block (at least 50 ms);
    one untimed round follows. At least ``MIN_ROUNDS`` rounds are timed,
    whatever the budget. ``loaded`` (the machine was busy at the start)
    flags the result, as it flags a cell.
    """
    dev = torch.device(device)
    prec = Precision(precision)
    clocks = []
    numbers = []
    for fn in (slow, fast):
        runner, _, _ = prepare(fn, dev, prec, cuda_graph)
        runner()  # warm-up
        clock = block_clock(runner, dev)
        clocks.append(clock)
        numbers.append(calls_per_block(clock(1)))

    def one_round(order: tuple[int, int]) -> tuple[float, float]:
        per_call = [0.0, 0.0]
        for side in order:
            per_call[side] = clocks[side](numbers[side]) / numbers[side]
        return per_call[0], per_call[1]

    one_round((0, 1))  # untimed: both sides run once more with their block size before anything counts
    ratios: list[float] = []
    spent = 0.0
    while True:
        slow_s, fast_s = one_round((0, 1) if len(ratios) % 2 == 0 else (1, 0))
        spent += slow_s * numbers[0] + fast_s * numbers[1]
        ratios.append(slow_s / fast_s if fast_s > 0 else float("inf"))
        if len(ratios) < MIN_ROUNDS or len(ratios) % 2:
            continue
        median, p25, p75 = quantile(ratios, 0.5), quantile(ratios, 0.25), quantile(ratios, 0.75)
        if (p75 - p25) <= threshold * median or spent > budget_s:
            break
    flags = []
    if median > 0 and (p75 - p25) / median > threshold:
        flags.append(f"spread {100 * (p75 - p25) / median:.0f}% > {100 * threshold:.0f}%")
    if loaded and dev.type != "cuda":
        flags.append("load at start")
    return SpeedUp(
        target=target,
        input_hw=(int(input_hw[0]), int(input_hw[1])),
        batch=batch,
        slow=slow_name,
        fast=fast_name,
        median=median,
        p25=p25,
        p75=p75,
        rounds=len(ratios),
        calls_per_block=(numbers[0], numbers[1]),
        ratios=tuple(round(r, 5) for r in ratios),
        flags=tuple(flags),
    )
