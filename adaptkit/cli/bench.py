"""``adaptkit bench [SOURCE]``: naive vs planned vs fused adapters and the whole estimator, side by side.

Renders what ``adaptkit.benchmarking`` measures: a progress bar while it
runs, then one table per target and the summary figures, and writes the
JSON result (named after the device) and a latency-vs-batch plot.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adaptkit.cli._common import stdout_console

if TYPE_CHECKING:
    from adaptkit.bench.benchmarking import BenchResult, Summary

DEFAULT_OUT_DIR = "benchmarks/results"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time naive, planned and fused adapters and the whole estimator",
        description=(
            "Time the adapter the naive way, as planned, and fused, plus the whole estimator, at each batch size "
            "and input size. On two CPU cores the default run takes 6 to 10 minutes (a call slower than --budget, "
            "such as the whole estimator at batch 32 and 640x640, is timed once after one warm-up); --quick (about "
            "3 minutes) times the whole estimator only at the smallest batch and input and makes at most 3 timed runs."
        ),
    )
    parser.add_argument(
        "source", nargs="?", default="sctnet-b", metavar="SOURCE", help="the backbone (default sctnet-b)"
    )
    parser.add_argument(
        "--target",
        dest="targets",
        action="append",
        metavar="CONFIG",
        help="hrnet, crowdpose, a config file or mmpose::path.py (repeatable; default: hrnet and crowdpose)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    parser.add_argument(
        "--batch", dest="batches", default="1,8,32", metavar="LIST", help="batch sizes (default 1,8,32)"
    )
    parser.add_argument(
        "--input",
        dest="inputs",
        default="256x192,640x640",
        metavar="LIST",
        help="HxW input sizes (default 256x192,640x640)",
    )
    parser.add_argument(
        "--repeat", type=int, metavar="N", help="timed runs per measurement (default 10; 3 with --quick)"
    )
    parser.add_argument(
        "--warmup", type=int, metavar="N", help="warm-up runs per measurement (default 2; 1 with --quick)"
    )
    parser.add_argument(
        "--budget",
        dest="budget_s",
        type=float,
        metavar="SECONDS",
        help="stop repeating a measurement once this is spent, after one timed run (default 2; 0.5 with --quick)",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--dtype", default="fp32", help="fp32, or autocast fp16 (CUDA) / bf16")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay CUDA graphs (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="fuse with channels_last weights and inputs")
    parser.add_argument("--no-estimator", action="store_true", help="skip the whole-estimator measurements")
    parser.add_argument(
        "--quick", action="store_true", help="fewer runs; the whole estimator only at the smallest sizes"
    )
    parser.add_argument(
        "--out-dir",
        default=DEFAULT_OUT_DIR,
        metavar="DIR",
        help=f"where the JSON and PNG go (default {DEFAULT_OUT_DIR})",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    parser.set_defaults(run=run)


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def run(args: argparse.Namespace) -> int:
    from adaptkit.bench.benchmarking import make_request, result_filename, run_bench, summarize, write_json, write_plot

    request = make_request(
        args.source,
        args.targets,
        device=args.device,
        batches=args.batches,
        inputs=args.inputs,
        repeat=args.repeat,
        warmup=args.warmup,
        budget_s=args.budget_s,
        precision=args.dtype,
        cuda_graphs=args.cuda_graphs,
        channels_last=args.channels_last,
        estimator=not args.no_estimator,
        quick=args.quick,
        threads=args.threads,
    )
    from adaptkit.core.files import check_creatable_folder
    from adaptkit.errors import BenchError

    check_creatable_folder(args.out_dir, "--out-dir", BenchError)  # before the measurements, not after
    console = stdout_console()
    progress_console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=progress_console,
        transient=True,
        disable=not progress_console.is_terminal,  # nothing on a piped stderr: errors stay one line
    ) as bar:
        task = bar.add_task("starting", total=None)

        def progress(description: str, done: int, total: int) -> None:
            bar.update(task, description=description, completed=done, total=total or None)

        result = run_bench(request, progress=progress)

    env = result.environment
    load = f", load {env.load_average[0]:.2f}" if env.load_average else ""
    console.print(
        f"{request.source} on {env.device_name} ({env.device}, {env.threads} threads{load}, torch {env.torch_version}, "
        f"{request.precision.value}), {result.seconds:.0f} s"
    )
    for name, plan in result.fusion:
        console.print(
            f"fuse {name}: {' -> '.join(plan.layers)}; {plan.macs_before:,.0f} -> {plan.macs_after:,.0f} MACs per feature pixel"
        )
    _render_measurements(console, result)
    _render_summary(console, summarize(result.measurements))

    out_dir = Path(args.out_dir)
    json_path = write_json(result, out_dir / result_filename(env))
    console.print(f"wrote {json_path}")
    if not args.no_plot:
        png_path = write_plot(result, json_path.with_suffix(".png"))
        console.print(f"wrote {png_path}")
    return 0


def _render_measurements(console: Console, result: BenchResult) -> None:
    memory_kind = next((m.memory_kind for m in result.measurements if m.memory_kind != "none"), "none")
    for target in dict.fromkeys(m.target for m in result.measurements):
        table = Table(title=f"{target}: latency, throughput, peak memory ({memory_kind})", title_justify="left")
        for column, justify in (
            ("input", "left"),
            ("batch", "right"),
            ("variant", "left"),
            ("p50 ms", "right"),
            ("p90 ms", "right"),
            ("img/s", "right"),
            ("memory", "right"),
            ("runs", "right"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for m in result.measurements:
            if m.target != target:
                continue
            table.add_row(
                f"{m.input_hw[0]}x{m.input_hw[1]}",
                str(m.batch),
                m.variant,
                _ms(m.p50_ms),
                _ms(m.p90_ms),
                "-" if math.isnan(m.throughput) else f"{m.throughput:,.0f}",
                _bytes(m.memory_bytes),
                str(len(m.times_ms)) + (f" ({m.note})" if m.note else ""),
            )
        console.print(table)


def _render_summary(console: Console, summaries: tuple[Summary, ...]) -> None:
    table = Table(
        title="fused vs planned (neck + head), and the adapter's share of end-to-end time",
        title_justify="left",
    )
    for column in (
        "target",
        "input",
        "batch",
        "planned ms",
        "fused ms",
        "speed-up",
        "vs naive",
        "share planned",
        "share fused",
    ):
        table.add_column(column, justify="left" if column in ("target", "input") else "right")
    for s in summaries:
        table.add_row(
            s.target,
            f"{s.input_hw[0]}x{s.input_hw[1]}",
            str(s.batch),
            _ms(s.planned_ms),
            _ms(s.fused_ms),
            f"{s.fused_speedup:.2f}x",
            "-" if s.naive_speedup is None else f"{s.naive_speedup:.2f}x",
            _pct(s.share_planned),
            _pct(s.share_fused),
        )
    console.print(table)
    if any(s.share_fused is not None and s.share_fused < 0 for s in summaries):
        console.print("a negative share: the fused adapter + head ran faster than the stock head alone")
