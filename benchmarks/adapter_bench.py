"""Adapter speed: naive vs planned vs fused adapters, and the whole estimator, with their spread.

    .venv/bin/python benchmarks/adapter_bench.py [SOURCE] [--device cpu|cuda|auto] [--batch 1,8,32]
        [--input 256x192,640x640] [--threshold 0.1] [--budget S] [--dtype fp32|fp16|bf16] [--cuda-graphs]
        [--quick] [--pair-processes N] [--out-dir benchmarks/results]

Calls the library (adaptkit.bench: make_request -> run_bench -> summarize,
write_json, write_plot) and prints the summary; ``adaptkit bench`` renders
the same run with every cell. Default: SCTNet-B into mmpose's stock targets
(adaptkit.mm.stock) at batch 1, 8 and 32 and inputs 256x192 and 640x640.
Each cell is timed until its IQR is under the threshold of its median or
the budget runs out (at least four blocks); flagged cells carry a '*'.
Fused vs planned is timed in alternating pairs over four placements in memory,
in --pair-processes fresh processes (default 2; 0 times them in this one).
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from adaptkit.bench import check_out_dir, make_request, result_filename, run_bench, summarize, write_json, write_plot
from adaptkit.errors import AdaptkitError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="adapter_bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", nargs="?", default="sctnet-b")
    parser.add_argument("--target", dest="targets", action="append")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", dest="batches")
    parser.add_argument("--input", dest="inputs")
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--budget", dest="budget_s", type=float)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--cuda-graphs", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pair-processes", type=int)
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args(argv)
    try:
        request = make_request(
            args.source,
            args.targets,
            device=args.device,
            batches=args.batches,
            inputs=args.inputs,
            threshold=args.threshold,
            budget_s=args.budget_s,
            precision=args.dtype,
            cuda_graphs=args.cuda_graphs,
            quick=args.quick,
            **({} if args.pair_processes is None else {"pair_processes": args.pair_processes}),
        )
        out_dir = check_out_dir(args.out_dir)
        result = run_bench(request)
        json_path = write_json(result, out_dir / result_filename(result.environment))
        png_path = write_plot(result, json_path.with_suffix(".png"))
    except AdaptkitError as exc:
        print(f"adapter_bench.py: error: {exc}", file=sys.stderr)
        return 2
    env = result.environment
    table = Table(
        title=f"{request.source} on {env.device_name} ({env.device}, {env.threads} threads, "
        f"{request.precision.value}; load {env.load_average[0] if env.load_average else '?'} on {env.cores} cores)",
        title_justify="left",
    )
    for column in ("target", "input", "batch", "planned ms", "fused ms", "speed-up (quartile range)", "share fused"):
        table.add_column(column)
    for s in summarize(result.measurements, result.speedups):
        table.add_row(
            s.target,
            f"{s.input_hw[0]}x{s.input_hw[1]}",
            str(s.batch),
            f"{s.planned_ms:.3g}",
            f"{s.fused_ms:.3g}",
            f"{s.fused_speedup:.2f}x ({s.fused_speedup_low:.2f}-{s.fused_speedup_high:.2f})"
            + ("*" if s.flagged else ""),
            "-" if s.share_fused is None else f"{100 * s.share_fused:.2f}%",
        )
    Console(width=140).print(table)
    flagged = sum(bool(m.flags) for m in result.measurements) + sum(bool(p.flags) for p in result.speedups)
    cells = len(result.measurements) + len(result.speedups)
    print(f"{flagged} of {cells} cells and paired speed-ups flagged; wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
