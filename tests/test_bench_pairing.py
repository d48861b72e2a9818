"""Speed-ups timed in pairs: the ratio survives a machine that drifts, and its spread is reported and flagged."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import time

import pytest
import torch

from adaptkit.bench import measure, summarize
from adaptkit.bench.pairing import MIN_ROUNDS, ROUNDS_PER_PLACEMENT, Pair, SpeedUp, time_speedup, time_speedups

from .test_bench import FAKES


class Machine:
    """Calls that sleep for their own cost times the machine's slowness, which the test changes over time."""

    def __init__(self) -> None:
        self.slowness = 1.0
        self.log: list[str] = []

    def call(self, name: str, seconds: float):
        def run() -> None:
            self.log.append(name)
            time.sleep(seconds * self.slowness)

        return run


def test_a_two_to_one_pair_gives_two_with_its_quartiles_from_alternating_rounds():
    machine = Machine()
    s = time_speedup(
        machine.call("slow", 0.02), machine.call("fast", 0.01), slow_name="slow", fast_name="fast", budget_s=0.3
    )
    assert isinstance(s, SpeedUp) and (s.slow, s.fast) == ("slow", "fast")
    assert s.median == pytest.approx(2.0, rel=0.15) and s.p25 <= s.median <= s.p75
    assert s.rounds >= MIN_ROUNDS and s.rounds % 2 == 0 and len(s.ratios) == s.rounds
    assert s.calls_per_block == (3, 5)  # blocks of at least 50 ms
    assert (s.placements, s.processes) == (1, 1)
    # warm-up and sizing (one call each, four runs), the untimed round (slow 3, fast 5), then the timed
    # rounds: slow, fast | fast, slow | slow, fast ... (the order flips)
    runs = [(name, len(list(calls))) for name, calls in itertools.groupby(machine.log)][6:]
    assert runs[:4] == [("slow", 3), ("fast", 10), ("slow", 6), ("fast", 10)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.median = 1.0  # type: ignore[misc]


def test_a_machine_that_slows_down_midway_leaves_the_paired_ratio_alone():
    machine = Machine()
    slow, fast = machine.call("slow", 0.02), machine.call("fast", 0.01)

    def slow_then_the_machine_slows() -> None:
        slow()
        if machine.log.count("slow") == 12:  # from here on everything takes three times as long
            machine.slowness = 3.0

    # timed one after the other, the cells straddle the change: their ratio is off by nearly three
    machine.slowness = 1.0
    machine.log.clear()
    first = measure(slow_then_the_machine_slows, variant="slow", batch=1, budget_s=0.05, memory=False)
    second = measure(fast, variant="fast", batch=1, budget_s=0.05, memory=False)
    assert first.median_ms / second.median_ms < 1.0
    # timed in pairs, the change lands inside one round at most
    machine.slowness = 1.0
    machine.log.clear()
    paired = time_speedup(slow_then_the_machine_slows, fast, slow_name="slow", fast_name="fast", budget_s=0.5)
    assert machine.slowness == 3.0  # the change did happen during the pairing
    assert paired.median == pytest.approx(2.0, rel=0.15) and not paired.flags


def test_a_noisy_ratio_is_flagged_and_a_loaded_start_too():
    pattern = itertools.cycle((0.02,) * 3 + (0.04,) * 3)  # blocks of three calls: 80 and 100 ms by turns
    noisy = time_speedup(
        lambda: time.sleep(next(pattern)), lambda: time.sleep(0.01), slow_name="a", fast_name="b", budget_s=0.05
    )
    assert noisy.calls_per_block[0] == 3
    assert noisy.rounds >= MIN_ROUNDS  # past the budget: the spread needs its rounds
    assert any(f.startswith("spread ") for f in noisy.flags)
    quiet = time_speedup(
        lambda: time.sleep(0.01), lambda: time.sleep(0.01), slow_name="a", fast_name="b", budget_s=0.05, loaded=True
    )
    assert "load at start" in quiet.flags


def test_summarize_takes_the_paired_figure_and_its_flag_when_there_is_one():
    by_batch = {s.batch: s for s in summarize(FAKES)}
    assert not by_batch[8].paired and by_batch[8].fused_speedup == pytest.approx(2.5)
    pair = SpeedUp(
        target="hrnet", input_hw=(256, 192), batch=8, slow="planned", fast="fused", median=2.4, p25=2.3, p75=2.45,
        rounds=6, calls_per_block=(5, 10), ratios=(2.3,) * 6, flags=("spread 12% > 10%",),
    )  # fmt: skip
    s = {s.batch: s for s in summarize(FAKES, [pair])}[8]
    assert s.paired and (s.fused_speedup, s.fused_speedup_low, s.fused_speedup_high) == (2.4, 2.3, 2.45)
    assert s.flagged  # the cells are clean; the pairing is not
    assert s.planned_ms == 10.0 and s.fused_ms == 4.0  # the cells still give the times


# ------------------------------------------------------------------------------ placements, runs, processes

SEEN: list[tuple[str, int]] = []  # (side, address of the weight a call ran with); module level: copies share it


def _conv(side: str, conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    SEEN.append((side, conv.weight.data_ptr()))
    return conv(x)


def test_placements_rotate_the_rounds_over_deep_copies_on_fresh_memory():
    SEEN.clear()
    small, big = torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(8, 64, 3, padding=1)
    x = torch.randn(1, 8, 32, 32)
    s = time_speedup(
        functools.partial(_conv, "slow", big, x), functools.partial(_conv, "fast", small, x),
        slow_name="big", fast_name="small", placements=3, budget_s=0.01,
    )  # fmt: skip
    assert s.placements == 3 and s.rounds >= max(MIN_ROUNDS, 3 * ROUNDS_PER_PLACEMENT) and s.median > 1
    for side, weight in (("slow", big.weight), ("fast", small.weight)):
        addresses = {a for who, a in SEEN if who == side}
        assert len(addresses) == 3 and weight.data_ptr() in addresses  # the calls themselves, then two copies


class Placed:
    """A sleep whose deep copies cost ``step`` more each: placements that really differ."""

    def __init__(self, seconds: float, step: float) -> None:
        self.seconds, self.step = seconds, step

    def __call__(self) -> None:
        time.sleep(self.seconds)

    def __deepcopy__(self, memo: dict) -> Placed:
        return Placed(self.seconds + self.step, self.step)


def test_a_ratio_that_depends_on_the_placement_gets_a_range_that_holds_both():
    s = time_speedup(Placed(0.02, 0.01), Placed(0.01, 0.0), slow_name="a", fast_name="b", placements=2, budget_s=0.01)
    firsts, seconds = s.ratios[0::4] + s.ratios[1::4], s.ratios[2::4] + s.ratios[3::4]  # two rounds each in turn
    assert all(r == pytest.approx(2.0, rel=0.2) for r in firsts) and all(
        r == pytest.approx(3.0, rel=0.2) for r in seconds
    )
    assert s.p25 < 2.3 and s.p75 > 2.7 and "spread" in s.flags[0]  # one placement alone would have hidden this


def test_the_pairs_of_a_run_take_their_rounds_in_turn():
    machine = Machine()
    pairs = [
        Pair(machine.call(f"{name}-slow", 0.02), machine.call(f"{name}-fast", 0.01), "slow", "fast", target=name)
        for name in ("a", "b")
    ]
    done: list[int] = []
    a, b = time_speedups(pairs, budget_s=0.01, progress=done.append)
    assert a is not None and b is not None and (a.target, b.target) == ("a", "b")
    assert a.median == pytest.approx(2.0, rel=0.2) and b.median == pytest.approx(2.0, rel=0.2)
    owners = [name[0] for name, _ in itertools.groupby(machine.log)]
    switches = sum(x != y for x, y in itertools.pairwise(owners))
    assert switches >= MIN_ROUNDS // 2  # a, b, a, b ...: not all of a's rounds, then all of b's
    assert done[-1] == 2 and done == sorted(done)


def test_fresh_processes_pool_their_rounds_and_a_closure_falls_back_to_this_process(caplog):
    s = time_speedup(
        functools.partial(time.sleep, 0.02), functools.partial(time.sleep, 0.01), slow_name="a", fast_name="b",
        budget_s=0.01, processes=2,
    )  # fmt: skip
    assert s.processes == 2 and s.rounds >= 2 * MIN_ROUNDS and len(s.ratios) == s.rounds
    assert s.median == pytest.approx(2.0, rel=0.2)
    with caplog.at_level(logging.WARNING, logger="adaptkit.bench.pairing"):
        here = time_speedup(
            lambda: time.sleep(0.02), lambda: time.sleep(0.01), slow_name="a", fast_name="b",
            budget_s=0.01, processes=2,
        )  # fmt: skip
    assert here.processes == 1 and here.median == pytest.approx(2.0, rel=0.2)
    assert "timed in this process: the calls do not pickle" in caplog.text
