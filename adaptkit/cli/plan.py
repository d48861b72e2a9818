"""``adaptkit plan SOURCE --target TARGET``: what the backbone gives, what the head wants, and the chain between."""

from __future__ import annotations

import argparse

from rich.table import Table

from adaptkit.cli._common import add_source_arguments, parse_kwargs, print_json, stdout_console
from adaptkit.core.units import format_count, format_shape, format_stride


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="plan the adapter from a backbone to a head")
    add_source_arguments(parser)
    add_plan_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(run=run)


def add_plan_arguments(parser: argparse.ArgumentParser, *, target_help: str | None = None) -> None:
    parser.add_argument(
        "--target",
        required=True,
        metavar="TARGET",
        help=target_help or "CHANNELS@STRIDE (e.g. 32@4), a config file, or mmpose::path/to/config.py",
    )
    parser.add_argument("--select", metavar="PATH", help="use the backbone output at PATH (e.g. 0, 2.1.1, stage3)")
    parser.add_argument(
        "--strategy",
        choices=("adapt-features", "adapt-head"),
        default="adapt-features",
        help="adapt-features: keep the head, project to its in_channels (default); adapt-head: change the head's in_channels",
    )


def run(args: argparse.Namespace) -> int:
    from adaptkit.api import parse_target, plan
    from adaptkit.core.planning import plan_to_dict
    from adaptkit.core.probing import probe
    from adaptkit.core.shapes import parse_input_shape
    from adaptkit.sources import resolve_source

    input_shape = parse_input_shape(args.input_shape)
    target = parse_target(args.target)
    model = resolve_source(args.source, **parse_kwargs(args.kwargs))
    result = probe(model, input_shape)
    adapter_plan = plan(result, target, select=args.select, strategy=args.strategy)
    if args.json:
        print_json({"source": args.source, **plan_to_dict(adapter_plan)})
        return 0
    render_plan(result, adapter_plan, args.source)
    return 0


def render_plan(result, adapter_plan, source: str) -> None:  # type: ignore[no-untyped-def]
    console = stdout_console()
    target = adapter_plan.target
    side = Table(title=f"{source} at {format_shape(result.input_shape)} -> {target.source}", title_justify="left")
    for column in ("path", "module", "shape", "ch", "stride", "layout", ""):
        side.add_column(column)
    for f in result.features:
        mark = "selected" if f.path == adapter_plan.feature.path else ""
        if f.is_input:
            mark = "input passthrough"
        elif f.alias_of is not None:
            mark = f"same tensor as {f.alias_of}"
        style = "bold green" if f.path == adapter_plan.feature.path else None
        side.add_row(
            f.path or "<tensor>",
            f.module or "",
            format_shape(f.shape),
            str(f.channels),
            format_stride(f.stride),
            f.layout.value,
            mark,
            style=style,
        )
    side.add_section()
    head = target.head_type or "head"
    side.add_row(
        f"{head} expects",
        "",
        "",
        str(adapter_plan.out_channels),
        format_stride(target.stride),
        target.layout.value,
        f"{target.num_keypoints} keypoints" if target.num_keypoints else "",
        style="bold",
    )
    console.print(side)

    chain = Table(title=f"adapter chain ({adapter_plan.strategy.value})", title_justify="left")
    for column in ("step", "in -> out", "MACs", "out bytes", "params", "what"):
        chain.add_column(column, no_wrap=column != "what")
    for step in adapter_plan.steps:
        chain.add_row(
            step.kind.value,
            f"{format_shape(step.in_shape)} -> {format_shape(step.out_shape)}",
            format_count(step.macs),
            format_count(step.bytes),
            format_count(step.params),
            step.why if step.kind.value != "select" else f"path {step.arg('path')!r}",
        )
    console.print(chain)
    module = f" ({adapter_plan.feature.module})" if adapter_plan.feature.module else ""
    console.print(f"why {adapter_plan.feature.path!r}{module}: {adapter_plan.reason}")
    console.print(f"adapter total: {format_count(adapter_plan.macs)} MACs, {format_count(adapter_plan.params)} params")
