"""``adaptkit plan SOURCE --target TARGET``: what the backbone gives, what the head wants, and the chain between."""

from __future__ import annotations

import argparse

from rich.table import Table

from adaptkit.cli._common import add_source_arguments, parse_kwargs, print_json, stdout_console
from adaptkit.core.targets import SPEC_INPUT_DEFAULT
from adaptkit.core.units import format_count, format_shape, format_stride


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="plan the adapter from a backbone to a head")
    add_source_arguments(parser, input_default=None)
    add_plan_arguments(parser)
    parser.add_argument(
        "--input",
        dest="input_shape",
        metavar="BxCxHxW",
        help=f"probe shape (default: a config target's input size at batch 2, else {SPEC_INPUT_DEFAULT})",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(run=run)


def add_plan_arguments(parser: argparse.ArgumentParser, *, target_help: str | None = None) -> None:
    parser.add_argument(
        "--target",
        required=True,
        metavar="TARGET",
        help=target_help or "CHANNELS@STRIDE (e.g. 32@4), a config file, or mmpose::path/to/config.py",
    )
    parser.add_argument(
        "--select",
        metavar="PATH[,PATH...]",
        help="use the backbone output at PATH (e.g. 0, 2.1.1, stage3); several paths for a one-map head merge those scales",
    )
    parser.add_argument(
        "--policy",
        choices=("auto", "closest", "deepest", "fused"),
        default="auto",
        help="how to pick features without --select: closest stride, the deepest (most of the backbone), the closest "
        "fused with every coarser scale, or auto (closest, fused when the closest uses under half the backbone)",
    )
    parser.add_argument(
        "--fuse-scales",
        choices=("sum", "concat"),
        default="sum",
        help="how merged scales join: sum (FPN-style) or concat + 1x1 conv (default sum)",
    )
    parser.add_argument(
        "--strategy",
        choices=("adapt-features", "adapt-head"),
        default="adapt-features",
        help="adapt-features: keep the head, project to its in_channels (default); adapt-head: change the head's in_channels",
    )


def run(args: argparse.Namespace) -> int:
    from adaptkit.api import DEFAULT_PROBE_BATCH, parse_target, plan
    from adaptkit.core.planning import plan_to_dict
    from adaptkit.core.probing import probe
    from adaptkit.core.reach import probe_reach
    from adaptkit.core.shapes import parse_input_shape
    from adaptkit.core.targets import probe_shape
    from adaptkit.sources import resolve_source

    given = parse_input_shape(args.input_shape) if args.input_shape is not None else None
    target = parse_target(args.target)
    if given is None:  # the same default as wrap and adaptkit.plan: the codec's size, batch 2
        default = probe_shape(target, None, batch=DEFAULT_PROBE_BATCH) if target.input_size else SPEC_INPUT_DEFAULT
        given = parse_input_shape(default)
    input_shape = given
    model = resolve_source(args.source, **parse_kwargs(args.kwargs))
    result = probe(model, input_shape)
    reach = probe_reach(model, result)
    adapter_plan = plan(
        result,
        target,
        select=args.select,
        strategy=args.strategy,
        policy=args.policy,
        merge=args.fuse_scales,
        reach=reach,
    )
    warn_usage("plan", adapter_plan)
    if args.json:
        shares = {f.path: reach.share([f.path]) for f in result.features} if reach is not None else None
        print_json({"source": args.source, **plan_to_dict(adapter_plan), "feature_uses": shares})
        return 0
    render_plan(result, adapter_plan, args.source, reach)
    return 0


def warn_usage(command: str, adapter_plan) -> None:  # type: ignore[no-untyped-def]
    """The low-usage warning as one stderr line (the Python API raises it as an UnusedBackboneWarning)."""
    import sys

    from adaptkit.core.choosing import usage_warning

    message = usage_warning(adapter_plan)
    if message is not None:
        print(f"adaptkit {command}: warning: {message}", file=sys.stderr)


def usage_line(adapter_plan) -> str:  # type: ignore[no-untyped-def]
    """How much of the backbone the adapter's features depend on, in words."""
    if adapter_plan.uses is None:
        return "backbone used: unknown (the shape-only trace could not follow gradients)"
    return f"backbone used: {100 * adapter_plan.uses:.1f}% of its trainable parameters reach the head"


def render_plan(result, adapter_plan, source: str, reach=None) -> None:  # type: ignore[no-untyped-def]
    console = stdout_console()
    target = adapter_plan.target
    chosen = set(adapter_plan.paths)
    many = len(adapter_plan.inputs) > 1
    side = Table(title=f"{source} at {format_shape(result.input_shape)} -> {target.source}", title_justify="left")
    for column in ("path", "module", "shape", "ch", "stride", "layout", "uses", ""):
        side.add_column(column, justify="right" if column == "uses" else "left")
    for f in result.features:
        mark = "selected" if f.path in chosen else ""
        merged = [p for p in adapter_plan.inputs if f.path in {m.feature.path for m in p.merged}]
        if merged:
            mark = f"merged ({merged[0].merge.value})"
        if many and f.path in chosen:
            mark = "selected for input " + ", ".join(
                str(p.index) for p in adapter_plan.inputs if p.feature.path == f.path
            )
        if f.is_input:
            mark = "input passthrough"
        elif f.alias_of is not None:
            mark = f"same tensor as {f.alias_of}"
        style = "bold green" if f.path in chosen else None
        side.add_row(
            f.path or "<tensor>",
            f.module or "",
            format_shape(f.shape),
            str(f.channels),
            format_stride(f.stride),
            f.layout.value,
            f"{100 * reach.share([f.path]):.0f}%" if reach is not None and not f.is_input else "",
            mark,
            style=style,
        )
    side.add_section()
    head = target.head_type or "head"
    for p in adapter_plan.inputs:
        wanted = p.input
        note = f"{target.num_keypoints} keypoints" if target.num_keypoints else ""
        if target.kept_neck is not None:
            note = f"{note}; after the stock {target.kept_neck}".lstrip("; ")
        side.add_row(
            f"{head} expects" + (f" (input {p.index})" if many else ""),
            "",
            "",
            str(p.out_channels),
            format_stride(wanted.stride) if wanted.stride is not None else "any (pooled)",
            wanted.layout.value,
            "",
            note,
            style="bold",
        )
    console.print(side)

    chain = Table(title=f"adapter chain ({adapter_plan.strategy.value})", title_justify="left")
    for column in ("step", "in -> out", "MACs", "out bytes", "params", "what"):
        chain.add_column(column, no_wrap=column != "what")
    for p in adapter_plan.inputs:
        if many:
            chain.add_section()
        for step in p.all_steps:
            chain.add_row(
                (f"{p.index}: " if many else "") + step.kind.value,
                f"{format_shape(step.in_shape)} -> {format_shape(step.out_shape)}",
                format_count(step.macs),
                format_count(step.bytes),
                format_count(step.params),
                step.why if step.kind.value != "select" else f"path {step.arg('path')!r}",
            )
    console.print(chain)
    for p in adapter_plan.inputs:
        module = f" ({p.feature.module})" if p.feature.module else ""
        console.print(f"why {p.feature.path!r}{module}" + (f" for input {p.index}" if many else "") + f": {p.reason}")
    console.print(f"adapter total: {format_count(adapter_plan.macs)} MACs, {format_count(adapter_plan.params)} params")
    console.print(usage_line(adapter_plan))
