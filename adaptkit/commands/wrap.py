"""``adaptkit wrap SOURCE --target CONFIG --out FRAGMENT.py``: write the config fragment."""

from __future__ import annotations

import argparse
import shlex
import sys

from ._common import add_source_arguments, parse_kwargs, stdout_console
from .plan import add_plan_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("wrap", help="write an mmengine config fragment that uses SOURCE in a stock config")
    add_source_arguments(parser, input_default=None)
    add_plan_arguments(parser, target_help="a config file or mmpose::path/to/config.py")
    parser.add_argument("--input", dest="input_shape", metavar="BxCxHxW", help="probe shape (default: the config's input size, batch 2)")
    parser.add_argument("--out", required=True, metavar="FRAGMENT.py", help="where to write the fragment")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument("--checkpoint", metavar="FILE", help="a local backbone checkpoint, loaded through init_cfg")
    parser.add_argument("--allow-partial", action="store_true", help="accept a checkpoint that does not cover every weight")
    parser.add_argument(
        "--aux",
        action="append",
        default=[],
        metavar="PATH[:WEIGHT]",
        help="add an auxiliary heatmap head on the backbone output at PATH, loss weight WEIGHT (default 0.4); repeatable",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the written path")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..wrapping import wrap_config

    adapter_plan, _ = wrap_config(
        args.source,
        args.target,
        args.out,
        source_kwargs=parse_kwargs(args.kwargs),
        input_shape=args.input_shape,
        select=args.select,
        strategy=args.strategy,
        checkpoint=args.checkpoint,
        allow_partial=args.allow_partial,
        aux=args.aux,
        force=args.force,
        command="adaptkit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["wrap"] else None,
    )
    console = stdout_console()
    if not args.quiet:
        console.print(f"{args.source} -> {adapter_plan.target.source} ({adapter_plan.strategy.value})")
        console.print(f"  select {adapter_plan.feature.path!r}: {adapter_plan.reason}")
        for step in adapter_plan.steps[1:]:
            console.print(f"  {step.kind.value}: {step.why}")
    console.print(f"wrote {args.out}")
    return 0
