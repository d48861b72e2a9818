"""Benchmarks: naive vs planned vs fused adapters and the whole estimator, timed with their spread.

``timing`` (timer, environment), ``pairing`` (speed-ups timed in pairs), ``memory`` (peak bytes),
``request`` (options), ``harness`` (the variants and the run), ``report`` (summary, JSON, plot).
OpenMMLab is imported only when a run builds its targets.
"""

from __future__ import annotations

from adaptkit.bench.harness import BenchResult, Variant, run_bench
from adaptkit.bench.pairing import Pair, SpeedUp, time_speedup, time_speedups
from adaptkit.bench.report import Summary, check_out_dir, result_filename, summarize, write_json, write_plot
from adaptkit.bench.request import BenchRequest, make_request
from adaptkit.bench.timing import Device, Environment, Measurement, Precision, environment, measure

__all__ = [
    "BenchRequest",
    "BenchResult",
    "Device",
    "Environment",
    "Measurement",
    "Pair",
    "Precision",
    "SpeedUp",
    "Summary",
    "Variant",
    "check_out_dir",
    "environment",
    "make_request",
    "measure",
    "result_filename",
    "run_bench",
    "summarize",
    "time_speedup",
    "time_speedups",
    "write_json",
    "write_plot",
]
