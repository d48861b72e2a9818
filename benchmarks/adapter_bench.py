"""Adapter speed: naive vs planned vs fused adapters, and the whole estimator, side by side.

    .venv/bin/python benchmarks/adapter_bench.py [SOURCE] [--device cpu|cuda|auto] [--batch 1,8,32]
        [--input 256x192,640x640] [--repeat N] [--warmup N] [--dtype fp32|fp16|bf16] [--quick]
        [--out-dir benchmarks/results]

The same run as ``adaptkit bench`` (the logic is adaptkit.benchmarking; this
script only forwards its arguments). Default: SCTNet-B into mmpose's stock
HRNet-W32 COCO config and the ResNet-50 CrowdPose config, at batch 1, 8 and
32 and inputs 256x192 and 640x640. Writes
benchmarks/results/adapter_bench-<device>-<device name>.json and a PNG plot
of latency vs batch beside it. On two CPU cores the default run takes about
10 minutes: a call slower than the time budget (--budget, 2 s), such as the
whole estimator at batch 32 and 640x640, is timed once after one warm-up.
--quick (about 3 minutes) times the whole estimator only at the smallest
batch and input size. Other work on the machine skews CPU timings: the JSON
records the load average at the start.
"""

from __future__ import annotations

import sys

from adaptkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
