"""Probe speed: adaptkit.probe vs torchinfo.summary vs one real forward, side by side.

    .venv/bin/python benchmarks/probe_speed.py [--repeat 3] [--out benchmarks/results]

Backbones: SCTNet-B and mmpose's HRNet-W32 (the stock COCO config's backbone).
Inputs: 2x3x256x192, 2x3x640x640, 1x3x1024x2048. Everything runs in one
process on one device (the CPU here), so the ratios compare like with like.
Prints a table and writes probe_speed-<device>.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _device import device_name, slug  # noqa: E402

import adaptkit  # noqa: E402

HRNET = "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"
SHAPES = ((2, 3, 256, 192), (2, 3, 640, 640), (1, 3, 1024, 2048))


def seconds(fn, repeat: int) -> float:
    """Median wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per measurement (median); real forwards run once at 1024x2048"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    import torchinfo

    torch.manual_seed(0)
    device = torch.device("cpu")
    backbones = {
        "SCTNet-B": adaptkit.resolve_source("sctnet-b"),
        "HRNet-W32": adaptkit.resolve_source(HRNET).backbone,
    }
    for model in backbones.values():
        model.eval()
    adaptkit.probe(backbones["SCTNet-B"], SHAPES[0])  # pays torch's one-time start-up cost outside the timings

    rows = []
    for name, model in backbones.items():
        for shape in SHAPES:
            slow_repeat = 1 if shape[-1] * shape[-2] > 640 * 640 else args.repeat
            x = torch.randn(shape)
            t_probe = seconds(functools.partial(adaptkit.probe, model, shape), args.repeat)
            mode = adaptkit.probe(model, shape).mode.value
            with torch.no_grad():
                summary = functools.partial(torchinfo.summary, model, input_size=shape, verbose=0, device=device)
                t_info = seconds(summary, slow_repeat)
                t_real = seconds(functools.partial(model, x), slow_repeat)
            rows.append(
                dict(backbone=name, input="x".join(map(str, shape)), probe_s=t_probe, probe_mode=mode,
                     torchinfo_s=t_info, forward_s=t_real, speedup_vs_torchinfo=t_info / t_probe,
                     speedup_vs_forward=t_real / t_probe)
            )  # fmt: skip
            print(
                f"{name} {shape}: probe {t_probe:.3f}s torchinfo {t_info:.3f}s forward {t_real:.3f}s", file=sys.stderr
            )

    device_label = device_name(device)
    table = Table(title=f"probe speed on {device_label} (torch {torch.__version__})", title_justify="left")
    for column in (
        "backbone",
        "input",
        "adaptkit.probe",
        "torchinfo.summary",
        "one real forward",
        "probe vs torchinfo",
    ):
        table.add_column(column, justify="left" if column in ("backbone", "input") else "right")
    for r in rows:
        table.add_row(r["backbone"], r["input"], f"{r['probe_s']:.3f} s ({r['probe_mode']})", f"{r['torchinfo_s']:.3f} s",
                      f"{r['forward_s']:.3f} s", f"{r['speedup_vs_torchinfo']:.1f}x")  # fmt: skip
    Console(width=140).print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"probe_speed-{slug(device_label)}.json"
    path.write_text(
        json.dumps(dict(device=device_label, torch=torch.__version__, repeat=args.repeat, rows=rows), indent=2)
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
