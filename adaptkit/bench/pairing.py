"""Speed-ups timed in pairs, so that a machine that drifts slows both sides alike.

Timing two variants one after the other and dividing their medians lets
anything that changed in between (another process, a frequency step, a cold
cache) into the ratio, and neither cell's spread shows it: two runs then
disagree by more than either run's range. Here the two calls alternate block
for block: each round times one block of the slow call and one of the fast
call, in reversed order every other round, and gives one ratio (slow / fast
per call). The speed-up is the median of the round ratios and its range their
quartiles. Rounds go on, in pairs, until the quartile range is under
``threshold`` of the median (from the minimum count on) or the budget is
spent, torch.utils.benchmark's adaptive rule applied to the ratio itself.

Three more things move a ratio, and each has to land inside its range
rather than between two runs (figures from a 2-core CPU, SCTNet-B into the
stock HRNet and CrowdPose heads):

- where weights and inputs sit in memory: five fresh copies of the same
  modules in one process gave the fused vs planned HRNet head at batch 1 (a
  0.2 vs 0.7 ms call) medians from 2.9x to 3.35x over 80 rounds each, while
  one copy's rounds spread over about 0.25. ``Pair.placements`` > 1 rotates
  the rounds over the calls and deep copies of them, two rounds (both orders)
  on each in turn and ``ROUNDS_PER_PLACEMENT`` on each at least;
- the machine over a run: ``time_speedups`` times all the pairs of a run in
  turn, a couple of rounds each, so every pair spans the same stretch of time;
- the process: how the allocator serves a call's intermediate buffers
  (reused heap memory or fresh pages) follows from everything the process did
  before, and with every placement inside one benchmark process, two runs
  still gave CrowdPose at batch 1 2.60x (2.55-2.64) and 2.45x (2.37-2.51).
  With ``processes`` > 0 the pairs are timed in that many fresh Python
  processes, one after the other, and their rounds pooled.

Placements and processes need calls that carry their modules and inputs as
arguments (``functools.partial(fn, module, x)``): those deep-copy and pickle
to fresh memory, where a closure would copy to itself.
"""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from adaptkit.bench.timing import Precision, block_clock, calls_per_block, prepare, quantile, spread_flag

__all__ = [
    "MIN_ROUNDS",
    "PLACEMENTS",
    "PROCESSES",
    "ROUNDS_PER_PLACEMENT",
    "Pair",
    "SpeedUp",
    "time_speedup",
    "time_speedups",
]

log = logging.getLogger(__name__)

#: rounds before the spread is looked at; always an even number, so each order runs equally often
MIN_ROUNDS = 6
#: placements (the calls and deep copies of them) the benchmark times each pair over
PLACEMENTS = 4
#: rounds each placement gets before the spread is looked at: both orders, twice
ROUNDS_PER_PLACEMENT = 4
#: fresh processes the benchmark times its pairs in on the CPU
PROCESSES = 2

Call = Callable[[], Any]


@dataclass(frozen=True)
class Pair:
    """Two calls to time against each other, what they are, and over how many placements in memory."""

    slow: Call
    fast: Call
    slow_name: str
    fast_name: str
    target: str = ""
    input_hw: tuple[int, int] = (0, 0)
    batch: int = 1
    placements: int = 1  # the calls themselves, then deep copies of both


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
    placements: int = 1  # the calls and their copies the rounds rotated over
    processes: int = 1  # the Python processes whose rounds were pooled


@dataclass(frozen=True)
class _Options:
    device: str
    precision: str
    cuda_graph: bool
    threshold: float
    budget_s: float
    loaded: bool
    threads: int


class _Rounds:
    """One pair's clocks and the rounds timed so far (working state, never returned)."""

    def __init__(self, pair: Pair, dev: torch.device, prec: Precision, cuda_graph: bool) -> None:
        self.pair = pair
        calls = [(pair.slow, pair.fast)] + [copy.deepcopy((pair.slow, pair.fast)) for _ in range(pair.placements - 1)]
        self.clocks: list[tuple[Callable[[int], float], Callable[[int], float]]] = []
        for slow, fast in calls:
            runners = [prepare(fn, dev, prec, cuda_graph)[0] for fn in (slow, fast)]
            for runner in runners:
                runner()  # warm-up
            self.clocks.append((block_clock(runners[0], dev), block_clock(runners[1], dev)))
        self.numbers = (calls_per_block(self.clocks[0][0](1)), calls_per_block(self.clocks[0][1](1)))
        self.min_rounds = max(MIN_ROUNDS, ROUNDS_PER_PLACEMENT * pair.placements) if pair.placements > 1 else MIN_ROUNDS
        self.ratios: list[float] = []
        self.spent = 0.0
        self.done = False
        self._round(0, (0, 1))  # untimed: both sides run once more with their block size before anything counts

    def _round(self, placement: int, order: tuple[int, int]) -> tuple[float, float]:
        per_call = [0.0, 0.0]
        for side in order:
            per_call[side] = self.clocks[placement][side](self.numbers[side]) / self.numbers[side]
        return per_call[0], per_call[1]

    def two_rounds(self, threshold: float, budget_s: float) -> None:
        """Both orders on the next placement, then the stopping rule."""
        placement = (len(self.ratios) // 2) % len(self.clocks)
        for order in ((0, 1), (1, 0)):
            slow_s, fast_s = self._round(placement, order)
            self.spent += slow_s * self.numbers[0] + fast_s * self.numbers[1]
            self.ratios.append(slow_s / fast_s if fast_s > 0 else float("inf"))
        if len(self.ratios) >= self.min_rounds:
            p25, p75 = quantile(self.ratios, 0.25), quantile(self.ratios, 0.75)
            self.done = (p75 - p25) <= threshold * quantile(self.ratios, 0.5) or self.spent > budget_s

    def result(self) -> SpeedUp:
        p = self.pair
        return _summed(
            SpeedUp(
                target=p.target,
                input_hw=(int(p.input_hw[0]), int(p.input_hw[1])),
                batch=p.batch,
                slow=p.slow_name,
                fast=p.fast_name,
                median=0.0,
                p25=0.0,
                p75=0.0,
                rounds=0,
                calls_per_block=self.numbers,
                ratios=(),
                flags=(),
                placements=len(self.clocks),
            ),  # fmt: skip
            self.ratios,
        )


def _summed(base: SpeedUp, ratios: Sequence[float], processes: int = 1) -> SpeedUp:
    """``base`` with its median, quartiles and counts taken from ``ratios``."""
    median, p25, p75 = (quantile(ratios, q) for q in (0.5, 0.25, 0.75))
    return replace(
        base, median=median, p25=p25, p75=p75, rounds=len(ratios),
        ratios=tuple(round(r, 5) for r in ratios), processes=processes,
    )  # fmt: skip


def _flagged(s: SpeedUp, threshold: float, loaded: bool) -> SpeedUp:
    flags = [spread_flag(s.p25, s.median, s.p75, threshold)] + (["load at start"] if loaded else [])
    return replace(s, flags=tuple(f for f in flags if f))


def _in_this_process(
    pairs: Sequence[Pair], opts: _Options, progress: Callable[[int], None] | None
) -> list[SpeedUp | None]:
    dev, prec = torch.device(opts.device), Precision(opts.precision)
    states: list[_Rounds | None] = []
    for pair in pairs:
        try:
            states.append(_Rounds(pair, dev, prec, opts.cuda_graph))
        except torch.cuda.OutOfMemoryError:
            states.append(None)
    live = [s for s in states if s is not None]
    while not all(s.done for s in live):
        for state in live:
            if not state.done:
                state.two_rounds(opts.threshold, opts.budget_s)
        if progress is not None:
            progress(sum(s.done for s in live))
    return [s.result() if s is not None else None for s in states]


def _in_processes(
    pairs: Sequence[Pair], opts: _Options, processes: int, progress: Callable[[int], None] | None
) -> list[SpeedUp | None]:
    """Each process times every pair; their rounds are pooled. In this process instead when one cannot run."""
    runs: list[list[SpeedUp | None]] = []
    with tempfile.TemporaryDirectory(prefix="adaptkit-pairs-") as tmp:
        job, answer = Path(tmp) / "pairs.pt", Path(tmp) / "speedups.pt"
        try:
            torch.save((list(pairs), opts), job)
        except Exception as exc:  # a call that does not pickle (a closure, a local class)
            log.warning("paired speed-ups timed in this process: the calls do not pickle (%s)", exc)
            return _in_this_process(pairs, opts, progress)
        for k in range(processes):
            command = [sys.executable, "-m", "adaptkit.bench.pairing", str(job), str(answer)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                log.warning("paired speed-ups timed in this process: a worker process failed (%s)", last)
                return _in_this_process(pairs, opts, progress)
            runs.append(torch.load(answer, weights_only=False))
            if progress is not None:
                progress(len(pairs) * (k + 1) // processes)
    pooled: list[SpeedUp | None] = []
    for i in range(len(pairs)):
        mine = [run[i] for run in runs if run[i] is not None]
        ratios = [r for s in mine for r in s.ratios]  # type: ignore[union-attr]
        pooled.append(_summed(mine[0], ratios, processes=len(mine)) if mine else None)  # type: ignore[arg-type]
    return pooled


def time_speedups(
    pairs: Sequence[Pair],
    *,
    device: torch.device | str = "cpu",
    precision: Precision | str = Precision.FP32,
    cuda_graph: bool = False,
    threshold: float = 0.1,
    budget_s: float = 2.0,
    loaded: bool = False,
    processes: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[SpeedUp | None, ...]:
    """Time every pair, their rounds interleaved; one SpeedUp per pair, in order (see the module docstring).

    Every call, copies included, runs once to warm up; the originals run once
    more to size the blocks (at least 50 ms), which every placement then
    uses, and one untimed round follows. Each pair keeps its own budget and
    stopping rule; at least ``MIN_ROUNDS`` rounds, and ``ROUNDS_PER_PLACEMENT``
    per placement, are timed whatever the budget. ``processes`` > 0 (CPU only)
    times the pairs in that many fresh processes and pools the rounds; this
    process times them when the calls do not pickle or a worker fails (a
    warning says why). ``loaded`` (a CPU run that started on a busy machine)
    flags every result, as it flags a cell. A pair whose warm-up runs out of
    GPU memory gives None; ``progress`` is told how many pairs are finished.
    """
    dev = torch.device(device)
    opts = _Options(
        str(dev), Precision(precision).value, cuda_graph, threshold, budget_s, loaded, torch.get_num_threads()
    )
    if processes > 0 and dev.type == "cpu":
        results = _in_processes(pairs, opts, processes, progress)
    else:
        results = _in_this_process(pairs, opts, progress)
    flag_load = loaded and dev.type != "cuda"
    return tuple(_flagged(s, threshold, flag_load) if s is not None else None for s in results)


def time_speedup(
    slow: Call,
    fast: Call,
    *,
    slow_name: str,
    fast_name: str,
    target: str = "",
    input_hw: tuple[int, int] = (0, 0),
    batch: int = 1,
    placements: int = 1,
    device: torch.device | str = "cpu",
    precision: Precision | str = Precision.FP32,
    cuda_graph: bool = False,
    threshold: float = 0.1,
    budget_s: float = 2.0,
    loaded: bool = False,
    processes: int = 0,
) -> SpeedUp:
    """Time ``slow`` against ``fast`` alone: ``time_speedups`` with one pair."""
    pair = Pair(slow, fast, slow_name, fast_name, target, input_hw, batch, placements)
    (result,) = time_speedups(
        [pair], device=device, precision=precision, cuda_graph=cuda_graph, threshold=threshold,
        budget_s=budget_s, loaded=loaded, processes=processes,
    )  # fmt: skip
    if result is None:
        raise torch.cuda.OutOfMemoryError(f"{target} {slow_name} vs {fast_name}: out of GPU memory in the warm-up")
    return result


def _worker(job: str, answer: str) -> None:
    """One fresh process's share: time every pair here and write the results where the parent reads them."""
    pairs, opts = torch.load(job, weights_only=False)
    torch.set_num_threads(opts.threads)
    torch.save(_in_this_process(pairs, opts, None), answer)


if __name__ == "__main__":  # python -m adaptkit.bench.pairing JOB ANSWER, run by _in_processes
    from adaptkit.bench.pairing import _worker as worker  # the importable module, so its records unpickle by name

    worker(sys.argv[1], sys.argv[2])
