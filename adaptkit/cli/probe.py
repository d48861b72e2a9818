"""``adaptkit probe SOURCE --input BxCxHxW``: what the backbone returns, at which stride, in which layout."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from adaptkit.cli._common import add_source_arguments, parse_kwargs, print_json, stdout_console
from adaptkit.core.units import format_shape, format_stride

if TYPE_CHECKING:
    from adaptkit.core.records import FeatureSpec, ProbeResult

__all__ = ["register", "run", "probe_to_dict", "render_probe", "feature_notes"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("probe", help="show what a backbone returns: shapes, strides, layouts")
    add_source_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--layers", action="store_true", help="also list every layer with its output shape")
    parser.add_argument(
        "--mode",
        choices=("auto", "meta", "real"),  # TraceMode's values; spelled out to keep the CLI start light
        default="auto",
        help="auto: shape-only on the meta device, real tensors on a small input when that fails (default)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from adaptkit.core.probing import probe
    from adaptkit.core.shapes import parse_input_shape
    from adaptkit.sources import resolve_source

    input_shape = parse_input_shape(args.input_shape)  # a typo fails before the model is built
    model = resolve_source(args.source, **parse_kwargs(args.kwargs))
    result = probe(model, input_shape, mode=args.mode, layers=args.layers)
    if args.json:
        print_json(probe_to_dict(result, args.source))
    else:
        render_probe(result, args.source)
    return 0


def probe_to_dict(result: ProbeResult, source: str) -> dict[str, Any]:
    """The JSON document of ``adaptkit probe --json``."""
    document: dict[str, Any] = {
        "source": source,
        "input_shape": list(result.input_shape),
        "mode": result.mode.value,
        "fallback_reason": result.fallback_reason,
        "params": result.params,
        "seconds": round(result.seconds, 4),
        "features": [
            {
                "path": f.path,
                "module": f.module,
                "shape": list(f.shape),
                "channels": f.channels,
                "stride": list(f.stride),
                "layout": f.layout.value,
                "spatial": list(f.spatial) if f.spatial is not None else None,
                "prefix_tokens": f.prefix_tokens,
                "is_input": f.is_input,
                "alias_of": f.alias_of,
            }
            for f in result.features
        ],
    }
    if result.layers is not None:
        document["layers"] = [
            {
                "name": row.name,
                "type": row.type,
                "depth": row.depth,
                "output_shape": list(row.output_shape) if row.output_shape is not None else None,
                "params": row.params,
            }
            for row in result.layers
        ]
    return document


def feature_notes(feature: FeatureSpec) -> str:
    """What a reader should know about one feature beyond its numbers."""
    notes = []
    if feature.is_input:
        notes.append("input passthrough")
    if feature.alias_of is not None:
        notes.append(f"same tensor as {feature.alias_of or '<output>'}")
    if feature.prefix_tokens:
        notes.append(f"{feature.prefix_tokens} prefix token{'s' if feature.prefix_tokens > 1 else ''}")
    if not feature.is_spatial:
        notes.append("not a spatial map")
    return ", ".join(notes)


def render_probe(result: ProbeResult, source: str) -> None:
    console = stdout_console()
    shape = format_shape(result.input_shape)
    table = Table(title=Text(f"{source} at {shape}"), title_justify="left")
    for column, justify in (
        ("path", "left"), ("module", "left"), ("shape", "left"), ("channels", "right"), ("stride", "right")
    ):  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("layout")
    table.add_column("notes")
    for f in result.features:
        stride = format_stride(f.stride) if f.is_spatial else "-"
        cells = (
            f.path or "<tensor>",
            f.module or "",
            format_shape(f.shape),
            str(f.channels),
            stride,
            f.layout.value,
            feature_notes(f),
        )
        table.add_row(*(Text(cell) for cell in cells), style="dim" if f.is_input or f.alias_of is not None else None)
    console.print(table)

    if result.layers is not None:
        layers = Table(title=Text("layers"), title_justify="left")
        for column, justify in (
            ("name", "left"),
            ("type", "left"),
            ("depth", "right"),
            ("output shape", "left"),
            ("params", "right"),
        ):
            layers.add_column(column, justify=justify)  # type: ignore[arg-type]
        for row in result.layers:
            output = format_shape(row.output_shape) if row.output_shape is not None else "-"
            name = "  " * row.depth + (row.name or "(model)")
            layers.add_row(*(Text(cell) for cell in (name, row.type, str(row.depth), output, f"{row.params:,}")))
        console.print(layers)

    mode = result.mode.value
    if result.fallback_reason:
        mode += f" (meta trace failed {result.fallback_reason})"
    console.print(Text(f"{result.params:,} parameters | mode {mode} | {result.seconds:.2f} s"))
