"""``adaptkit bench [SOURCE]``: naive vs planned vs fused adapters and the whole estimator, side by side.

Renders what ``adaptkit.bench`` measures: a progress bar over the cells with
the time left, then one table per target (median, IQR, samples; flagged
cells marked) and the summary figures, and writes the JSON result (named
after the device) and the plot. ``--strict`` exits 3 when a cell is flagged.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from adaptkit.cli._common import stdout_console

if TYPE_CHECKING:
    from adaptkit.bench import BenchResult, Summary

DEFAULT_OUT_DIR = "benchmarks/results"
FLAGGED_EXIT = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time naive, planned and fused adapters and the whole estimator",
        description=(
            "Time the adapter the naive way, as planned, and fused, plus the whole estimator, at each batch size "
            "and input size. Each cell is timed in blocks until its interquartile range is under --threshold of "
            "its median (at least 4 blocks) or --budget is spent; a cell whose spread stays high, or a run started "
            "on a machine loaded above its core count, is flagged (*). --quick times batches 1 and 8 at 256x192 "
            "with 0.5 s per cell, the whole estimator at batch 1 only. Fused vs planned is timed in alternating "
            "pairs over four placements in memory, on the CPU in --pair-processes fresh processes, rounds pooled."
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
        help="hrnet, crowdpose, rtmpose, a config file or mmpose::path.py (repeatable; default: all three)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    parser.add_argument("--batch", dest="batches", metavar="LIST", help="batch sizes (default 1,8,32; 1,8 quick)")
    parser.add_argument(
        "--input", dest="inputs", metavar="LIST", help="HxW input sizes (default 256x192,640x640; 256x192 quick)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="stop a cell once its IQR is under this fraction of its median; flag it above (default 0.1)",
    )
    parser.add_argument(
        "--budget",
        dest="budget_s",
        type=float,
        metavar="SECONDS",
        help="time per cell before giving up on the threshold, after 4 blocks (default 2; 0.5 with --quick)",
    )
    parser.add_argument(
        "--pair-processes",
        type=int,
        metavar="N",
        help="fresh processes to time fused vs planned in on the CPU, rounds pooled; 0: this one (default 2)",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--dtype", default="fp32", help="fp32, or autocast fp16 (CUDA) / bf16")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay CUDA graphs (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="fuse with channels_last weights and inputs")
    parser.add_argument("--no-estimator", action="store_true", help="skip the whole-estimator measurements")
    parser.add_argument("--quick", action="store_true", help="small sizes, 0.5 s per cell, the estimator at batch 1")
    parser.add_argument("--strict", action="store_true", help=f"exit {FLAGGED_EXIT} when any cell is flagged")
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
    from adaptkit.bench import (
        check_out_dir,
        make_request,
        result_filename,
        run_bench,
        summarize,
        write_json,
        write_plot,
    )

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
        channels_last=args.channels_last,
        estimator=not args.no_estimator,
        quick=args.quick,
        threads=args.threads,
        **({} if args.pair_processes is None else {"pair_processes": args.pair_processes}),
    )
    out_dir = check_out_dir(args.out_dir)
    console = stdout_console()
    progress_console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=progress_console,
        transient=True,
        disable=not progress_console.is_terminal,  # nothing on a piped stderr: errors stay one line
    ) as bar:
        task = bar.add_task("starting", total=None)

        def progress(description: str, done: int, total: int) -> None:
            bar.update(task, description=description, completed=done, total=total or None)

        result = run_bench(request, progress=progress)

    env = result.environment
    load = f", load {env.load_average[0]:.2f} on {env.cores} cores" if env.load_average else ""
    console.print(
        f"{request.source} on {env.device_name} ({env.device}, {env.threads} threads{load}, torch {env.torch_version}, "
        f"{request.precision.value}), {result.seconds:.0f} s"
    )
    for name, plan in result.fusion:
        console.print(
            f"fuse {name}: {' -> '.join(plan.layers)}; {plan.macs_before:,.0f} -> {plan.macs_after:,.0f} MACs per feature pixel"
        )
    _render_measurements(console, result)
    _render_summary(console, summarize(result.measurements, result.speedups))
    for note in result.notes:
        console.print(f"note: {note}")

    json_path = write_json(result, out_dir / result_filename(env))
    console.print(f"wrote {json_path}")
    if not args.no_plot:
        png_path = write_plot(result, json_path.with_suffix(".png"))
        console.print(f"wrote {png_path}")
    flagged = [m for m in result.measurements if m.flags] + [p for p in result.speedups if p.flags]
    if flagged:
        cells = len(result.measurements) + len(result.speedups)
        console.print(
            f"{len(flagged)} of {cells} cells and paired speed-ups flagged (*): their figures are not to be trusted"
            + (f"; exit {FLAGGED_EXIT} (--strict)" if args.strict else "")
        )
        if args.strict:
            return FLAGGED_EXIT
    return 0


def _render_measurements(console: Console, result: BenchResult) -> None:
    memory_kind = next((m.memory_kind for m in result.measurements if m.memory_kind != "none"), "none")
    for target in dict.fromkeys(m.target for m in result.measurements):
        table = Table(title=f"{target}: latency, throughput, peak memory ({memory_kind})", title_justify="left")
        for column, justify in (
            ("input", "left"),
            ("batch", "right"),
            ("variant", "left"),
            ("median ms", "right"),
            ("IQR ms", "right"),
            ("ms/img", "right"),
            ("img/s", "right"),
            ("memory", "right"),
            ("samples", "right"),
            ("flag", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for m in result.measurements:
            if m.target != target:
                continue
            table.add_row(
                f"{m.input_hw[0]}x{m.input_hw[1]}",
                str(m.batch),
                m.variant,
                _ms(m.median_ms) + ("*" if m.flags else ""),
                _ms(m.iqr_ms),
                _ms(m.per_image_ms),
                "-" if math.isnan(m.throughput) else f"{m.throughput:,.0f}",
                _bytes(m.memory_bytes),
                f"{m.samples}x{m.calls_per_sample}",
                "; ".join(m.flags) + (f" ({m.note})" if m.note else ""),
            )
        console.print(table)


def _render_summary(console: Console, summaries: tuple[Summary, ...]) -> None:
    table = Table(
        title="fused vs planned (neck + head; speed-up and range: median and quartiles of paired rounds), "
        "and the adapter's share of end-to-end time",
        title_justify="left",
    )
    for column in (
        "target",
        "input",
        "batch",
        "planned ms",
        "fused ms",
        "speed-up",
        "range",
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
            f"{s.fused_speedup:.2f}x" + ("*" if s.flagged else ""),
            f"{s.fused_speedup_low:.2f}-{s.fused_speedup_high:.2f}x",
            "-" if s.naive_speedup is None else f"{s.naive_speedup:.2f}x",
            _pct(s.share_planned),
            _pct(s.share_fused),
        )
    console.print(table)
    if any(s.share_fused is not None and s.share_fused < 0 for s in summaries):
        console.print("a negative share: the fused adapter + head ran faster than the stock head alone")
