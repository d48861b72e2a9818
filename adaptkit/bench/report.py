"""The benchmark's report: the figures that matter, the JSON document and the plot. Nothing here prints.

``summarize`` turns cells into fused vs planned speed-ups with a range, so
two runs can be compared by their spread, not by one number each: the
median and quartiles of the paired rounds (``adaptkit.bench.pairing``) when
the run timed them, else the ratio of the two cells' medians with a range
from their quartiles (planned p25 / fused p75 to planned p75 / fused p25).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adaptkit.bench.harness import BenchResult, Variant
from adaptkit.bench.pairing import SpeedUp
from adaptkit.bench.timing import Environment, Measurement, slug
from adaptkit.errors import AdaptkitError, BenchError

__all__ = [
    "Summary",
    "summarize",
    "result_filename",
    "result_document",
    "check_out_dir",
    "write_json",
    "write_plot",
]

SCHEMA = 4


@dataclass(frozen=True)
class Summary:
    """The figures that matter for one target, input size and batch. Times are medians in milliseconds."""

    target: str
    input_hw: tuple[int, int]
    batch: int
    head_ms: float
    planned_ms: float
    fused_ms: float
    naive_head_ms: float | None
    naive_resize_ms: float | None
    fused_speedup: float  # planned / fused, neck + head
    fused_speedup_low: float  # planned p25 / fused p75
    fused_speedup_high: float  # planned p75 / fused p25
    paired: bool  # the speed-up and its range come from paired rounds, not from the two cells
    naive_speedup: float | None  # naive-head / fused
    estimator_ms: float | None
    estimator_fused_ms: float | None
    adapter_ms_planned: float  # planned - head: the adapter's own time
    adapter_ms_fused: float  # fused - head (may be negative: the fused head can beat the stock one)
    share_planned: float | None  # adapter_ms_planned / estimator_ms
    share_fused: float | None  # adapter_ms_fused / estimator_fused_ms
    flagged: bool  # one of the cells these figures come from is flagged


def summarize(measurements: Sequence[Measurement], speedups: Sequence[SpeedUp] = ()) -> tuple[Summary, ...]:
    """Per target, input size and batch: fused vs planned speed-up and the adapter's share of end-to-end time."""
    table: dict[tuple[str, tuple[int, int], int], dict[str, Measurement]] = {}
    for m in measurements:
        table.setdefault((m.target, m.input_hw, m.batch), {})[m.variant] = m
    pairs = {
        (p.target, p.input_hw, p.batch): p
        for p in speedups
        if (p.slow, p.fast) == (Variant.PLANNED.value, Variant.FUSED.value)
    }
    out: list[Summary] = []
    for (target, hw, batch), row in table.items():
        needed = (Variant.HEAD.value, Variant.PLANNED.value, Variant.FUSED.value)
        if not all(k in row and not math.isnan(row[k].median_ms) for k in needed):
            continue
        head, planned, fused = (row[k] for k in needed)
        est, est_fused = row.get(Variant.ESTIMATOR.value), row.get(Variant.ESTIMATOR_FUSED.value)
        naive, naive_resize = row.get(Variant.NAIVE_HEAD.value), row.get(Variant.NAIVE_RESIZE.value)
        est_ms = est.median_ms if est is not None else None
        est_fused_ms = est_fused.median_ms if est_fused is not None else None
        adapter_planned = planned.median_ms - head.median_ms
        pair = pairs.get((target, hw, batch))
        if pair is not None:
            speedup = (pair.median, pair.p25, pair.p75)
        else:
            speedup = (
                planned.median_ms / fused.median_ms,
                planned.p25_ms / fused.p75_ms,
                planned.p75_ms / fused.p25_ms,
            )
        adapter_fused = fused.median_ms - head.median_ms
        out.append(
            Summary(
                target=target,
                input_hw=hw,
                batch=batch,
                head_ms=head.median_ms,
                planned_ms=planned.median_ms,
                fused_ms=fused.median_ms,
                naive_head_ms=naive.median_ms if naive is not None else None,
                naive_resize_ms=naive_resize.median_ms if naive_resize is not None else None,
                fused_speedup=speedup[0],
                fused_speedup_low=speedup[1],
                fused_speedup_high=speedup[2],
                paired=pair is not None,
                naive_speedup=naive.median_ms / fused.median_ms if naive is not None else None,
                estimator_ms=est_ms,
                estimator_fused_ms=est_fused_ms,
                adapter_ms_planned=adapter_planned,
                adapter_ms_fused=adapter_fused,
                share_planned=adapter_planned / est_ms if est_ms else None,
                share_fused=adapter_fused / est_fused_ms if est_fused_ms else None,
                flagged=any(m.flags for m in row.values()) or bool(pair and pair.flags),
            )
        )
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# files


def result_filename(env: Environment) -> str:
    """``adapter_bench-<device>-<device name slug>.json``."""
    return f"adapter_bench-{env.device}-{slug(env.device_name)}.json"


def check_out_dir(path: str | Path) -> Path:
    """The folder results will go in, checked before any measurement; BenchError when it cannot be written.

    A folder that does not exist yet is fine when its nearest existing
    ancestor is a writable folder (it is created when the results are written).
    """
    from adaptkit.core.files import user_path, user_path_errors

    out = user_path(path, "--out-dir", BenchError)  # a name the file system cannot hold fails in one line too
    probe = out
    with user_path_errors(out, "use --out-dir", BenchError):
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "" if probe == out else f" ({str(probe)!r} is a file)"
        raise BenchError(f"--out-dir {str(out)!r} cannot be a folder{where}; give a folder")
    try:  # the one true test of writability (root ignores modes; a read-only mount does not)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BenchError(
            f"--out-dir {str(out)!r}: cannot write in {str(probe)!r} ({reason}); give another folder"
        ) from None
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cell(m: Measurement) -> dict[str, Any]:
    """A cell as data; torch's Measurement as its own fields (raw block times, calls per block, task)."""
    doc = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name != "measurement"}
    doc["flagged"] = bool(m.flags)
    if m.measurement is not None:
        t = m.measurement
        doc["measurement"] = {
            "number_per_run": t.number_per_run,
            "raw_times_s": list(t.raw_times),
            "median_s": t.median,
            "iqr_s": t.iqr,
            "num_threads": t.task_spec.num_threads,
            "label": t.task_spec.label,
            "timer": t.task_spec.description,
        }
    else:
        doc["measurement"] = None
    return doc


def result_document(result: BenchResult) -> dict[str, Any]:
    """The result as plain JSON data (what ``write_json`` writes)."""
    return _plain(
        {
            "schema": SCHEMA,
            "started": result.started,
            "seconds": round(result.seconds, 2),
            "environment": asdict(result.environment),
            "request": asdict(result.request),
            "timing": "torch.utils.benchmark adaptive_autorange rule: blocks of calls until the IQR is under "
            "`threshold` of the median (at least 4 blocks) or `budget_s` is spent; CUDA blocks timed with "
            "CUDA events. A cell is flagged when its spread stays above the threshold, it has fewer than 4 "
            "samples, or the load average at the start was above the core count.",
            "memory": "CUDA: torch.cuda.max_memory_allocated over one call minus the bytes allocated before it. "
            "CPU: peak bytes the call holds on the CPU allocator (torch.profiler memory events), not process RSS.",
            "fusion": {name: asdict(plan) for name, plan in result.fusion},
            "pairing": "fused vs planned speed-ups: rounds of one block of each, in alternating order, rotating "
            "over `placements` copies of the modules and inputs, all pairs of the run timed in turn; the "
            "speed-up is the median of the round ratios, its range their quartiles (adaptkit.bench.pairing).",
            "summary": [asdict(s) for s in summarize(result.measurements, result.speedups)],
            "speedups": [asdict(p) for p in result.speedups],
            "measurements": [_cell(m) for m in result.measurements],
            "notes": list(result.notes),
        }
    )


def write_json(result: BenchResult, path: str | Path) -> Path:
    """Write the result document in one step; the folder is created when missing."""
    from adaptkit.core.emitting import write_atomic

    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(result_document(result), indent=1) + "\n", force=True)
    except OSError as exc:
        raise BenchError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    except AdaptkitError as exc:
        raise BenchError(str(exc)) from None
    return out


# ---------------------------------------------------------------------------------------------
# plot


def write_plot(result: BenchResult, path: str | Path) -> Path:
    """Median latency per batch and per image against batch size, with IQR error bars; flagged cells marked.

    One row per target and input size; the left panel is the latency of one
    batch, the right one the same divided by the batch (per image). The
    legend sits outside the panels, under them.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    cells = [m for m in result.measurements if not math.isnan(m.median_ms)]
    if not cells:
        raise BenchError("nothing was measured, so there is nothing to plot")
    rows = list(dict.fromkeys((m.target, m.input_hw) for m in cells))
    fig = Figure(figsize=(11.0, 3.4 * len(rows) + 0.8), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    colors = {v.value: f"C{i}" for i, v in enumerate(Variant)}  # one colour per variant in every panel
    batches = sorted({m.batch for m in cells})
    drawn: dict[str, Any] = {}
    any_flag = False
    for r, (target, hw) in enumerate(rows):
        for c, per_image in enumerate((False, True)):
            ax = axes[r][c]
            for variant in Variant:
                points = sorted(
                    (m for m in cells if (m.target, m.input_hw, m.variant) == (target, hw, variant.value)),
                    key=lambda m: m.batch,
                )
                if not points:
                    continue
                scale = [m.batch if per_image else 1 for m in points]
                xs = [m.batch for m in points]
                ys = [m.median_ms / s for m, s in zip(points, scale, strict=True)]
                low = [(m.median_ms - m.p25_ms) / s for m, s in zip(points, scale, strict=True)]
                high = [(m.p75_ms - m.median_ms) / s for m, s in zip(points, scale, strict=True)]
                color = colors[variant.value]
                bars = ax.errorbar(xs, ys, yerr=[low, high], marker="o", ms=4, capsize=3, color=color)
                drawn.setdefault(variant.value, bars.lines[0])
                flagged = [(x, y) for x, y, m in zip(xs, ys, points, strict=True) if m.flags]
                if flagged:
                    any_flag = True
                    ax.scatter(*zip(*flagged, strict=True), s=110, facecolors="none", edgecolors="red", zorder=5)
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.set_yscale("log")
            kind = "per image" if per_image else "per batch"
            ax.set_title(f"{target}, {hw[0]}x{hw[1]}: {kind}", fontsize=9)
            ax.set_xlabel("batch")
            ax.set_ylabel(f"median ms {kind} (IQR bars)", fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
    labels: list[str] = [v.value for v in Variant if v.value in drawn]
    handles = [drawn[k] for k in labels]
    if any_flag:
        handles.append(Line2D([], [], marker="o", ls="", ms=9, mfc="none", mec="red"))
        labels.append("flagged (spread, samples or load)")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=8, frameon=False)
    env = result.environment
    fig.suptitle(
        f"{result.request.source}: {env.device_name} ({env.device}, {env.threads} threads, "
        f"{result.request.precision.value})",
        fontsize=10,
    )
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    except OSError as exc:
        raise BenchError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    return out
