"""``adaptkit wrap SOURCE --target CONFIG|CHANNELS@STRIDE --out FRAGMENT.py``: write the config fragment."""

from __future__ import annotations

import argparse
import shlex
import sys

from adaptkit.cli._common import add_source_arguments, parse_kwargs, stdout_console
from adaptkit.cli.plan import add_plan_arguments, usage_line, warn_usage
from adaptkit.core.targets import SPEC_INPUT_DEFAULT, is_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("wrap", help="write an mmengine config fragment that uses SOURCE in a stock config")
    add_source_arguments(parser, input_default=None)
    add_plan_arguments(
        parser,
        target_help="a config file or mmpose::path/to/config.py; or CHANNELS@STRIDE (e.g. 32@4) for a model "
        "fragment with no _base_, to use from your own config",
    )
    parser.add_argument(
        "--input",
        dest="input_shape",
        metavar="BxCxHxW",
        help=f"probe shape (default: a config target's input size at batch 2, else {SPEC_INPUT_DEFAULT})",
    )
    parser.add_argument("--out", required=True, metavar="FRAGMENT.py", help="where to write the fragment")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument("--checkpoint", metavar="FILE", help="a local backbone checkpoint, loaded through init_cfg")
    parser.add_argument(
        "--allow-partial", action="store_true", help="accept a checkpoint that does not cover every weight"
    )
    parser.add_argument(
        "--aux",
        action="append",
        default=[],
        metavar="PATH[:WEIGHT]",
        help="add an auxiliary heatmap head on the backbone output at PATH, loss weight WEIGHT (default 0.4); repeatable",
    )
    parser.add_argument(
        "--distill",
        metavar="TEACHER_CONFIG",
        help="add a channel-wise distillation head against the frozen backbone (+neck) of this config",
    )
    parser.add_argument("--distill-checkpoint", metavar="FILE", help="the teacher's local checkpoint (with --distill)")
    parser.add_argument(
        "--distill-from", metavar="PATH", help="student feature to align (default: the one the head reads)"
    )
    parser.add_argument(
        "--distill-weight", type=float, default=1.0, metavar="W", help="distillation loss weight (default 1)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the written path")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from adaptkit.errors import OptionError
    from adaptkit.mm.fragments import DistillRequest, wrap_config

    distill = None
    if args.distill or args.distill_checkpoint or args.distill_from:
        if not (args.distill and args.distill_checkpoint):
            raise OptionError(
                "--distill TEACHER_CONFIG and --distill-checkpoint FILE go together (--distill-from needs both)"
            )
        distill = DistillRequest(args.distill, args.distill_checkpoint, args.distill_from, weight=args.distill_weight)

    result = wrap_config(
        args.source,
        args.target,
        args.out,
        source_kwargs=parse_kwargs(args.kwargs),
        input_shape=args.input_shape,
        select=args.select,
        strategy=args.strategy,
        policy=args.policy,
        merge=args.fuse_scales,
        checkpoint=args.checkpoint,
        allow_partial=args.allow_partial,
        aux=args.aux,
        distill=distill,
        force=args.force,
        command="adaptkit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["wrap"] else None,
    )
    adapter_plan = result.plan
    warn_usage("wrap", adapter_plan)
    console = stdout_console()
    if result.checkpoint is not None and not args.quiet:
        render_load_report(console, args.checkpoint, result.checkpoint)
    if not args.quiet:
        console.print(f"{args.source} -> {adapter_plan.target.source} ({adapter_plan.strategy.value})")
        many = len(adapter_plan.inputs) > 1
        for p in adapter_plan.inputs:
            pad = f"  input {p.index}: " if many else "  "
            console.print(f"{pad}select {p.feature.path!r}: {p.reason}")
            for m in p.merged:
                console.print(f"{pad}  and {m.feature.path!r}: " + "; ".join(s.why for s in m.steps[1:]))
            for step in p.steps[1:]:
                console.print(f"{pad}{step.kind.value}: {step.why}")
        console.print(f"  {usage_line(adapter_plan)}")
        if adapter_plan.target.kept_neck is not None:
            console.print(f"  then the stock {adapter_plan.target.kept_neck} neck, kept")
        from adaptkit.mm.aux_plans import parse_aux

        for path, weight in map(parse_aux, args.aux):
            console.print(f"  auxiliary heatmap head on {path!r}, loss weight {weight:g}")
        if distill is not None:
            console.print(f"  distillation head against {distill.teacher_config}, loss weight {distill.weight:g}")
        if is_spec(args.target):
            from adaptkit.core.emitting import MODEL_FRAGMENT_KEY

            console.print(
                f"  a model fragment (no _base_): list it in your config's _base_, then model = _base_.{MODEL_FRAGMENT_KEY}"
            )
    console.print(f"wrote {args.out}")
    return 0


def render_load_report(console, path: str, report) -> None:  # type: ignore[no-untyped-def]
    """Which checkpoint keys went where: loaded, missing, unexpected, shape-mismatched."""
    from rich.table import Table

    prefix = ""
    if report.prefix_stripped or report.prefix_added:
        prefix = f" (prefix {report.prefix_stripped or '-'!r} -> {report.prefix_added or '-'!r})"
    table = Table(title=f"checkpoint {path}{prefix}", title_justify="left")
    table.add_column("keys")
    table.add_column("count", justify="right")
    table.add_column("first few")
    rows = [
        ("loaded", report.loaded),
        ("missing in the checkpoint", report.missing),
        ("unexpected (not in the backbone)", report.unexpected),
        ("shape mismatch (not loaded)", [f"{k} {list(a)} vs {list(b)}" for k, a, b in report.mismatched]),
        ("ignored (other parts of the saved model)", report.ignored),
    ]
    for name, keys in rows:
        if keys or name == "loaded":
            table.add_row(name, str(len(keys)), ", ".join(list(keys)[:3]) + (" ..." if len(keys) > 3 else ""))
    console.print(table)
