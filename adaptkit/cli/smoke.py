"""``adaptkit smoke FRAGMENT``: train a fragment on a learnable synthetic task and score it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adaptkit.cli._common import print_json, stdout_console


def register(subparsers: argparse._SubParsersAction) -> None:
    from adaptkit.mm.smoke import DEFAULT_BATCH, DEFAULT_IMAGES, DEFAULT_ITERS, DEFAULT_VAL_IMAGES

    parser = subparsers.add_parser(
        "smoke",
        help="train a pose config on synthetic keypoints (mmengine Runner, CPU or GPU) and score a held-out split",
    )
    parser.add_argument("fragment", metavar="FRAGMENT", help="a top-down pose config (file or mmpose::path.py)")
    parser.add_argument(
        "--work-dir", metavar="DIR", help="where data, logs and checkpoints go (default work_dirs/smoke/NAME)"
    )
    parser.add_argument(
        "--iters", type=int, default=DEFAULT_ITERS, help=f"training iterations (default {DEFAULT_ITERS})"
    )
    parser.add_argument(
        "--images", type=int, default=DEFAULT_IMAGES, help=f"training images (default {DEFAULT_IMAGES})"
    )
    parser.add_argument(
        "--val-images", type=int, default=DEFAULT_VAL_IMAGES, help=f"held-out images (default {DEFAULT_VAL_IMAGES})"
    )
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"batch size (default {DEFAULT_BATCH})")
    parser.add_argument("--json", action="store_true", help="print ap, metric, iters, seconds, checkpoint as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from adaptkit.mm.smoke import SmokeSettings, run_smoke

    settings = SmokeSettings(iters=args.iters, images=args.images, batch=args.batch, val_images=args.val_images)
    work_dir = (
        Path(args.work_dir) if args.work_dir else Path("work_dirs/smoke") / Path(args.fragment.split("::")[-1]).stem
    )
    console = stdout_console()
    bar_console = Console(file=sys.stderr) if args.json else console  # --json keeps stdout for the document
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=bar_console, transient=args.json, disable=False) as bar:
        tasks: dict[str, object] = {}

        def progress(stage: str, done: int, total: int, loss: float | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task("train" if stage == "train" else "test (held-out)", total=total)
            text = f"train  loss {loss:.5f}" if loss is not None else None
            bar.update(tasks[stage], completed=done, **({"description": text} if text else {}))  # type: ignore[arg-type]

        result = run_smoke(args.fragment, work_dir, settings, progress=progress)
    if args.json:
        print_json(
            {
                "ap": result.ap,
                "metric": result.metric,
                "value": result.value,
                "iters": result.iters,
                "seconds": round(result.seconds, 1),
                "checkpoint": str(result.checkpoint),
                "runner_checkpoint": str(result.runner_checkpoint) if result.runner_checkpoint else None,
                "metrics": result.metrics,
            }
        )
        return 0
    better = "higher is better" if result.higher_is_better else "lower is better"
    console.print(
        f"{result.metric} = {result.value:.3f} on {settings.val_images} held-out images ({better}), "
        f"after {result.iters} iterations in {result.seconds:.0f} s"
    )
    console.print(f"checkpoint: {result.checkpoint}  (mmpose.apis.init_model loads it as it is)")
    return 0
