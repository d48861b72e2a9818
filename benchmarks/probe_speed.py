"""Probe speed: adaptkit.probe vs torchinfo.summary vs one real forward, side by side, with their spread.

    .venv/bin/python benchmarks/probe_speed.py [--budget 1.0] [--backbone sctnet-b|hrnet-w32]
        [--shape 2x3x256x192 ...] [--timm NAME ...] [--out benchmarks/results]

Backbones: SCTNet-B and mmpose's HRNet-W32 (the stock COCO config's
backbone), and any timm model named with ``--timm`` (alone, unless
``--backbone`` is given too). Beside the probe's own choice (``mode`` auto,
which says which path ran) the table times the probe forced onto the real
path and one plain forward, so a model whose real forward is cheaper than
the meta traces shows it. Inputs: 1x3x64x64, 2x3x256x192, 2x3x640x640, 1x3x1024x2048. Each
call is timed by adaptkit.bench's rule (blocks until the IQR is under 10 %
of the median or the budget is spent, at least four blocks), all in one
process on one device (the CPU here), so the ratios compare like with like;
the ratio's range comes from the quartiles (torchinfo p25 / probe p75 to
torchinfo p75 / probe p25). A '*' marks a flagged cell (spread, or a machine
loaded above its core count at the start). Prints a table and writes
probe_speed-<device>.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import adaptkit
from adaptkit.bench import Environment, environment, measure
from adaptkit.bench.request import parse_inputs
from adaptkit.bench.timing import slug
from adaptkit.errors import AdaptkitError
from adaptkit.mm.stock import HRNET

BACKBONES = {"sctnet-b": ("SCTNet-B", "sctnet-b"), "hrnet-w32": ("HRNet-W32", HRNET)}
SHAPES = ((1, 3, 64, 64), (2, 3, 256, 192), (2, 3, 640, 640), (1, 3, 1024, 2048))


def _shape(text: str) -> tuple[int, int, int, int]:
    batch, _, hw = text.partition("x3x")
    try:
        (h, w), n = parse_inputs(hw)[0], int(batch)
    except (AdaptkitError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not Bx3xHxW") from None
    return n, 3, h, w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="probe_speed.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per cell after four blocks (default 1)")
    parser.add_argument("--backbone", action="append", choices=sorted(BACKBONES), help="default: both")
    parser.add_argument("--shape", action="append", type=_shape, help="Bx3xHxW (repeatable; default: four sizes)")
    parser.add_argument("--timm", action="append", default=[], metavar="NAME", help="a timm model too (repeatable)")
    parser.add_argument("--no-forward", action="store_true", help="skip the real-forward and real-probe columns")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    import torchinfo

    torch.manual_seed(0)
    env = environment("cpu")  # before any work: the load at the start is other people's
    shapes = tuple(args.shape or SHAPES)
    rows = []
    chosen = [BACKBONES[key] for key in args.backbone or ([] if args.timm else list(BACKBONES))]
    for name, source in chosen + [(n, f"timm:{n}") for n in args.timm]:
        try:
            model = adaptkit.resolve_source(source).eval()
        except AdaptkitError as exc:
            parser.exit(2, f"probe_speed.py: error: {exc}\n")
        adaptkit.probe(model, shapes[0])  # torch's one-time start-up cost, outside the timings
        for shape in shapes:
            cell = functools.partial(measure, batch=shape[0], budget_s=args.budget, memory=False, loaded=env.loaded)
            result = adaptkit.probe(model, shape)
            probe = cell(functools.partial(adaptkit.probe, model, shape), variant="probe", target=name)
            info = cell(
                functools.partial(torchinfo.summary, model, input_size=shape, verbose=0, device="cpu"),
                variant="torchinfo",
                target=name,
            )
            x = torch.randn(shape)
            forward = real = None
            if not args.no_forward:
                forward = cell(functools.partial(model, x), variant="forward", target=name)
                real = cell(
                    functools.partial(adaptkit.probe, model, shape, mode="real"), variant="probe-real", target=name
                )
            rows.append(
                dict(
                    backbone=name,
                    input="x".join(map(str, shape)),
                    probe_mode=result.mode.value,
                    probe_s=probe.median_ms / 1000,
                    probe_iqr_s=probe.iqr_ms / 1000,
                    torchinfo_s=info.median_ms / 1000,
                    torchinfo_iqr_s=info.iqr_ms / 1000,
                    forward_s=None if forward is None else forward.median_ms / 1000,
                    forward_iqr_s=None if forward is None else forward.iqr_ms / 1000,
                    probe_real_s=None if real is None else real.median_ms / 1000,
                    probe_real_iqr_s=None if real is None else real.iqr_ms / 1000,
                    speedup_vs_torchinfo=info.median_ms / probe.median_ms,
                    speedup_low=info.p25_ms / probe.p75_ms,
                    speedup_high=info.p75_ms / probe.p25_ms,
                    flags=sorted({f for m in (probe, info, forward, real) if m is not None for f in m.flags}),
                    samples=dict(probe=probe.samples, torchinfo=info.samples),
                )
            )
            flags = "; ".join(rows[-1]["flags"]) or "not flagged"
            print(
                f"{name} {shape}: probe {probe.median_ms:.1f} ms (IQR {probe.iqr_ms:.1f}), torchinfo "
                f"{info.median_ms:.1f} ms (IQR {info.iqr_ms:.1f}), {rows[-1]['speedup_vs_torchinfo']:.1f}x ({flags})",
                file=sys.stderr,
            )
            _write(args.out, env, args.budget, rows)  # after every row: a long run stopped early keeps its rows

    def sec(value: float | None, iqr: float | None) -> str:
        return "-" if value is None else f"{value:.3f} s ± {(iqr or 0) / 2:.3f}"

    load = f"load {env.load_average[0]:.2f} on {env.cores} cores" if env.load_average else "load unknown"
    table = Table(
        title=f"probe speed on {env.device_name} ({env.threads} threads, {load}, torch {torch.__version__}); "
        "median ± IQR/2",
        title_justify="left",
    )
    columns = ("backbone", "input", "adaptkit.probe", "probe, mode=real", "one real forward", "torchinfo.summary")
    for column in (*columns, "probe vs torchinfo"):
        table.add_column(column, justify="left" if column in ("backbone", "input") else "right")
    for r in rows:
        table.add_row(
            r["backbone"],
            r["input"],
            f"{sec(r['probe_s'], r['probe_iqr_s'])} ({r['probe_mode']})",
            sec(r["probe_real_s"], r["probe_real_iqr_s"]),
            sec(r["forward_s"], r["forward_iqr_s"]),
            sec(r["torchinfo_s"], r["torchinfo_iqr_s"]),
            f"{r['speedup_vs_torchinfo']:.1f}x ({r['speedup_low']:.1f}-{r['speedup_high']:.1f})"
            + ("*" if r["flags"] else ""),
        )
    Console(width=160).print(table)
    print(f"wrote {_write(args.out, env, args.budget, rows)}")
    return 0


def _write(out: Path, env: Environment, budget: float, rows: list[dict[str, Any]]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"probe_speed-cpu-{slug(env.device_name)}.json"
    document = dict(environment=asdict(env), torch=torch.__version__, budget_s=budget, rows=rows)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
