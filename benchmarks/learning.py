"""Does an adapted backbone learn? Held-out AP at equal CPU time, against the stock model.

Each variant trains with ``adaptkit smoke``'s Runner on the same synthetic
COCO task (same images, same schedule shape, same seed) for as many
iterations as fit into ``--budget`` seconds of this process's CPU time
(``time.process_time()``: other work on the machine does not count), then
scores the same held-out split with the stock COCO metric.

Variants: mmpose's stock HRNet-W32 config; SCTNet-B wrapped into it (the
shipped fragment); torchvision's ResNet-50 (c2..c5) wrapped into it under
each feature policy: the closest feature (c2, stride 4), the deepest (c5,
stride 32), and c2..c5 merged by a sum or by concat + 1x1 conv.

    python benchmarks/learning.py [--budget 300] [--threads 2] [--only sctnet-b,...]
    python benchmarks/learning.py --iters 200 --only stock   # equal iterations instead of equal CPU time
    python benchmarks/learning.py --iters 100 --only sum,concat --seed 1   # other initial weights and order

Writes benchmarks/results/learning-<device>.json and .png, and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# OpenMP threads that spin while they wait burn CPU time whenever another process holds a core, so a
# busy machine would inflate "CPU seconds" unevenly between variants; passive waiting keeps the budget fair.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adaptkit.bench.timing import environment, slug  # noqa: E402

HRNET = "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"
RESNET50 = f"{ROOT / 'examples' / 'torchvision_backbone.py'}:resnet50_features"


@dataclass(frozen=True)
class Row:
    variant: str
    params_m: float
    cpu_s_per_iter: float
    iters: int
    cpu_seconds: float
    wall_seconds: float
    ap: float
    ap50: float
    load: float | None  # the 1-minute load average when the variant started


def fragments(work: Path) -> dict[str, str]:
    """Each variant's config: the stock one, the shipped SCTNet-B fragment, and two ResNet-50 wraps."""
    from adaptkit.mm.fragments import wrap_config

    out = {"hrnet-w32 (stock)": HRNET, "sctnet-b": str(ROOT / "adapters" / "sctnet-b_hrnet-w32_coco-256x192.py")}
    for name, options in (
        ("c2 (closest)", dict(policy="closest")),
        ("c5 (deepest)", dict(policy="deepest")),
        ("c2..c5 sum (fused)", dict(policy="fused", merge="sum")),
        ("c2..c5 concat (fused)", dict(policy="fused", merge="concat")),
    ):
        path = work / f"resnet50_{slug(name)}.py"
        wrap_config(RESNET50, HRNET, path, force=True, **options)
        out[f"resnet-50 {name}"] = str(path)
    return out


def cpu_seconds_per_iter(config: str, batch: int, steps: int = 5) -> tuple[float, float]:
    """CPU seconds of one training step at ``batch`` (median of ``steps`` after one warm-up), and params (M)."""
    from mmengine.structures import InstanceData, PixelData
    from mmpose.structures import PoseDataSample

    from adaptkit.mm.openmmlab import build_model, load_config

    model = build_model(load_config(config).model)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch, 3, 256, 192)
    samples = []
    for _ in range(batch):
        sample = PoseDataSample()
        sample.gt_fields = PixelData(heatmaps=torch.rand(17, 64, 48))
        sample.gt_instance_labels = InstanceData(keypoint_weights=torch.ones(1, 17))
        sample.set_metainfo(dict(input_size=(192, 256), flip_indices=list(range(17))))
        samples.append(sample)
    times = []
    for _ in range(steps + 1):
        started = time.process_time()
        loss = model(x, samples, mode="loss")["loss_kpt"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.process_time() - started)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return sorted(times[1:])[len(times[1:]) // 2], params


def write(rows: list[Row], args: argparse.Namespace, device: str) -> Path:
    """The JSON document (after every variant, so a long run stopped early keeps what it measured)."""
    args.out.mkdir(parents=True, exist_ok=True)
    kind = (f"-{args.iters}iters" if args.iters else "") + (f"-seed{args.seed}" if args.seed else "")
    path = (args.out / f"learning-{slug(device)}{kind}").with_suffix(".json")
    doc = {
        "device": device,
        "budget": None if args.iters else args.budget,
        "iters": args.iters,
        "seed": args.seed,
        "rows": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(doc, indent=2))
    return path


def device_name(args: argparse.Namespace) -> str:
    return f"{environment().device_name} ({args.threads} threads)"


def run(args: argparse.Namespace) -> list[Row]:
    from adaptkit.mm.smoke import SmokeSettings, run_smoke

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="adaptkit-learning-") as tmp:
        work = Path(tmp)
        variants = fragments(work)
        for name, config in variants.items():
            if args.only and not any(o in name for o in args.only.split(",")):
                continue
            load = environment().load_average
            per_iter, params = cpu_seconds_per_iter(config, args.batch)
            iters = args.iters or max(1, int(args.budget / per_iter))
            settings = SmokeSettings(
                iters=iters, images=args.images, batch=args.batch, val_images=args.val_images, seed=args.seed
            )
            result = run_smoke(config, work / slug(name), settings)
            row = Row(
                variant=name, params_m=round(params, 2), cpu_s_per_iter=round(per_iter, 3), iters=iters,
                cpu_seconds=round(result.cpu_seconds, 1), wall_seconds=round(result.seconds, 1),
                ap=round(result.metrics["coco/AP"], 3), ap50=round(result.metrics["coco/AP .5"], 3), load=load[0] if load else None,
            )  # fmt: skip
            print(json.dumps(asdict(row)), file=sys.stderr, flush=True)
            rows.append(row)
            write(rows, args, device_name(args))
    return rows


def render(rows: list[Row], args: argparse.Namespace, device: str) -> str:
    lines = [
        f"{device}, torch {torch.__version__}, "
        + (f"{args.iters} iterations" if args.iters else f"budget {args.budget:.0f} CPU s")
        + f" per variant, batch {args.batch}, seed {args.seed}",
        "",
        "| variant | params (M) | CPU s / iter | iters | CPU s used | held-out AP | AP .5 | wall s | load at start |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.variant} | {r.params_m} | {r.cpu_s_per_iter} | {r.iters} | {r.cpu_seconds:.0f} | {r.ap:.3f} | {r.ap50:.3f} | {r.wall_seconds:.0f} | {r.load} |"
        )
    stock = next((r for r in rows if "stock" in r.variant), None)
    sct = next((r for r in rows if r.variant == "sctnet-b"), None)
    if stock and sct and stock.ap > 0:
        lines += ["", f"SCTNet-B reaches {100 * sct.ap / stock.ap:.0f}% of stock HRNet-W32's AP at {equal(args)}."]
    resnet = [r for r in rows if r.variant.startswith("resnet-50")]
    if resnet:
        best = max(resnet, key=lambda r: r.ap)
        lines += ["", f"Best ResNet-50 feature choice at {equal(args)}: {best.variant} (AP {best.ap:.3f})."]
    return "\n".join(lines)


def equal(args: argparse.Namespace) -> str:
    """What the variants were given in equal measure."""
    return f"{args.iters} iterations each" if args.iters else "equal CPU time"


def plot(rows: list[Row], path: Path, given: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh([r.variant for r in rows], [r.ap for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(r.ap + 0.01, i, f"{r.ap:.3f} ({r.iters} it)", va="center")
    ax.set_xlim(0, 1.35)  # room for the labels right of a bar near 1.0
    ax.set_xlabel(f"held-out AP (synthetic COCO) at {given}")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=300.0, help="CPU seconds of training per variant")
    parser.add_argument("--iters", type=int, default=0, help="train every variant this many iterations instead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="initial weights and data order (the images stay the same)")
    parser.add_argument("--only", help="comma-separated parts of variant names to run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.budget <= 0 or args.threads < 1 or args.iters < 0 or args.seed < 0:
        parser.error("--budget and --threads must be positive, --iters and --seed not negative")
    rows = run(args)
    device = device_name(args)
    print(render(rows, args, device))
    path = write(rows, args, device)
    if rows:
        plot(rows, path.with_suffix(".png"), equal(args))


if __name__ == "__main__":
    main()
