"""Emit stage: the mmengine config fragment that puts a backbone and its adapter into a stock config.

The fragment inherits the stock config by package scope
(``_base_ = ['mmpose::...']``), imports adaptkit's modules through
``custom_imports``, replaces ``model.backbone``, sets ``model.neck`` to the
adapter and keeps (or, for the adapt-head strategy, re-sizes) the head.
For a bare ``CHANNELS@STRIDE`` target there is no stock config: the model
fragment has no ``_base_`` and names its backbone and neck ``adaptkit_model``,
for the user's config to take (``model_fragment_text``).
Files are written through ``adaptkit.core.files`` (atomically, created
exclusively, never over an existing file unless asked).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptkit.core.building import adapter_config
from adaptkit.core.choosing import usage_warning
from adaptkit.core.files import check_destination, write_atomic
from adaptkit.core.records import AdapterPlan, Strategy

__all__ = [
    "PLUGIN_MODULE",
    "MODEL_FRAGMENT_KEY",
    "FragmentRequest",
    "ModelFragmentRequest",
    "fragment_text",
    "model_fragment_text",
    "check_destination",
    "write_atomic",
    "format_value",
]

_INDENT = "    "
#: what a fragment's custom_imports names: it registers adaptkit's modules in mmpose's registry
PLUGIN_MODULE = "adaptkit.mmpose_plugin"
#: the key a model fragment puts its backbone and neck under: mmengine refuses one key (``model``) in two _base_ files
MODEL_FRAGMENT_KEY = "adaptkit_model"


@dataclass(frozen=True)
class FragmentRequest:
    """What goes into one fragment besides the plan."""

    source: str
    source_kwargs: tuple[tuple[str, Any], ...]
    base: str  # the stock config, package-scoped or a path
    base_has_neck: bool
    checkpoint: str | None
    allow_partial: bool
    command: str  # the command that regenerates the fragment
    extra_model: tuple[tuple[str, Any], ...] = ()  # further model keys (auxiliary heads, estimator type)
    unused_modules: tuple[str, ...] = ()  # backbone modules no head reads (DDP must be told)
    kept_neck: tuple[tuple[str, Any], ...] | None = None  # the stock neck config that runs after the adapter


@dataclass(frozen=True)
class ModelFragmentRequest:
    """What goes into a model fragment (no stock config, a bare spec target) besides the plan."""

    source: str
    source_kwargs: tuple[tuple[str, Any], ...]
    checkpoint: str | None
    allow_partial: bool
    command: str  # the command that regenerates the fragment
    input_shape: tuple[int, ...]  # the shape the backbone was probed and planned at
    file_name: str  # how the user's config names the fragment in its _base_
    unused_modules: tuple[str, ...] = ()  # backbone modules no head reads (DDP must be told)


def format_value(value: Any, level: int = 0) -> str:
    """Python source for a config value: dicts as ``dict(...)``, one key a line."""
    pad = _INDENT * (level + 1)
    if isinstance(value, Mapping):
        if not value:
            return "dict()"
        if all(isinstance(k, str) and k.isidentifier() for k in value):
            items = [f"{pad}{k}={format_value(v, level + 1)}," for k, v in value.items()]
        else:
            items = [f"{pad}{k!r}: {format_value(v, level + 1)}," for k, v in value.items()]
            return "{\n" + "\n".join(items) + "\n" + _INDENT * level + "}"
        return "dict(\n" + "\n".join(items) + "\n" + _INDENT * level + ")"
    if isinstance(value, (list, tuple)):
        inner = [format_value(v, level + 1) for v in value]
        text = ", ".join(inner)
        if "\n" in text or len(text) > 80:
            body = "\n".join(f"{pad}{v}," for v in inner)
            open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
            return f"{open_}\n{body}\n{_INDENT * level}{close}"
        if isinstance(value, tuple):
            return f"({text},)" if len(value) == 1 else f"({text})"
        return f"[{text}]"
    if isinstance(value, float) and value.is_integer():
        return repr(int(value))
    return repr(value)


def _describe(plan: AdapterPlan) -> list[str]:
    t = plan.target
    lines = []
    many = len(plan.inputs) > 1
    if many:
        nesting = f", nested as {len(t.groups)} groups of {list(t.groups)}" if t.groups else ""
        lines.append(
            f"the adapter returns {len(plan.inputs)} maps, in the order {t.head_type or 'the head'} reads them{nesting}"
        )
    for p in plan.inputs:
        f = p.feature
        pad = f"input {p.index}: " if many else ""
        lines += [
            f"{pad}feature {f.path!r}: {list(f.shape)} {f.layout.value}, {f.channels} ch at stride {format_value(list(f.stride))}",
            f"{pad}why: {p.reason}",
        ]
        for m in p.merged:
            lines.append(
                f"{pad}merged feature {m.feature.path!r}: {list(m.feature.shape)} {m.feature.layout.value}, "
                f"{m.feature.channels} ch at stride {format_value(list(m.feature.stride))}"
            )
            lines += [f"{pad}  step: {step.kind.value}: {step.why}" for step in m.steps[1:]]
        lines += [f"{pad}step: {step.kind.value}: {step.why}" for step in p.steps[1:]]
    if t.kept_neck is not None:
        lines.append(f"the adapter runs before the stock {t.kept_neck} neck, which stays: the head reads what it pools")
    if t.stride is None:
        lines.append(f"head ({t.head_type or 'target'}) reads {plan.out_channels} ch, pooled")
    elif not many:
        lines.append(
            f"head ({t.head_type or 'target'}) reads {plan.out_channels} ch at stride {format_value(list(t.stride))}"
        )
    if t.featuremap_size is not None:
        lines.append(
            f"exact grid: {t.featuremap_size[0]}x{t.featuremap_size[1]} (width x height), the head's in_featuremap_size"
        )
    if plan.uses is not None:
        lines.append(f"backbone used: {100 * plan.uses:.1f}% of its trainable parameters reach the head")
    warning = usage_warning(plan)
    if warning is not None:
        lines.append(f"warning: {warning}")
    return lines


def fragment_text(plan: AdapterPlan, request: FragmentRequest) -> str:
    """The whole fragment as Python source."""
    backbone = _backbone_config(request)
    neck = adapter_config(plan)
    if request.kept_neck is not None:
        neck = dict(type="AdapterThenNeck", adapter=neck, neck=dict(request.kept_neck))
    if request.base_has_neck:
        neck = dict(_delete_=True, **neck)
    model: dict[str, Any] = dict(backbone=backbone, neck=neck)
    if plan.strategy is Strategy.ADAPT_HEAD:
        model["head"] = dict(in_channels=plan.out_channels)
    model.update(dict(request.extra_model))
    header = [
        "# Generated by adaptkit; regenerate with:",
        f"#   {request.command}",
        *(f"# {line}" for line in _describe(plan)),
    ]
    body = [
        f"_base_ = [{request.base!r}]",
        "",
        f"custom_imports = dict(imports=[{PLUGIN_MODULE!r}], allow_failed_imports=False)",
        "",
        f"model = {format_value(model)}",
    ]
    body += _unused_lines(request.unused_modules)
    return "\n".join(header + [""] + body) + "\n"


def _backbone_config(request: FragmentRequest | ModelFragmentRequest) -> dict[str, Any]:
    """The ForeignBackbone entry; ``_delete_`` so none of the replaced backbone's keys survive the merge."""
    backbone: dict[str, Any] = dict(_delete_=True, type="ForeignBackbone", source=request.source)
    if request.source_kwargs:
        backbone["kwargs"] = dict(request.source_kwargs)
    if request.checkpoint:
        backbone["init_cfg"] = dict(type="Pretrained", checkpoint=request.checkpoint)
        if request.allow_partial:
            backbone["allow_partial"] = True
    return backbone


def _unused_lines(unused_modules: tuple[str, ...]) -> list[str]:
    """``find_unused_parameters`` and why, when some backbone modules feed no head."""
    if not unused_modules:
        return []
    return [
        "",
        f"# no head reads the backbone's {', '.join(unused_modules)}: DistributedDataParallel must not wait for them",
        "find_unused_parameters = True",
    ]


def model_fragment_text(plan: AdapterPlan, request: ModelFragmentRequest) -> str:
    """A fragment with no ``_base_`` for a bare spec target: the backbone and adapter, and how to use them.

    Its parts sit under ``adaptkit_model``, not ``model``: a config lists it in
    ``_base_`` beside the config whose head it serves and sets ``model`` from it.
    The neck carries no ``_delete_``: mmengine keeps that key when the config
    has no neck to replace, and the neck's constructor would receive it.
    """
    specs = ",".join(f"{i.channels}@{_spec_stride(i.stride)}" for i in plan.target.inputs)
    probed = "x".join(map(str, request.input_shape))
    key = MODEL_FRAGMENT_KEY
    header = [
        "# Generated by adaptkit; regenerate with:",
        f"#   {request.command}",
        f"# a model fragment, no _base_: this backbone and an adapter for a head that reads {specs}"
        f" (channels@stride), planned at input {probed}",
        *(f"# {line}" for line in _describe(plan)),
        f"# use it from your config (mmengine allows no key in two _base_ files, so the parts are {key}):",
        f"#   _base_ = ['your_config.py', {request.file_name!r}]",
        f"#   model = _base_.{key}",
        f"# when your config's model has a neck, replace it: model = dict(_base_.{key}, "
        f"neck=dict(_delete_=True, **_base_.{key}.neck))",
    ]
    model = dict(backbone=_backbone_config(request), neck=adapter_config(plan))
    body = [
        f"custom_imports = dict(imports=[{PLUGIN_MODULE!r}], allow_failed_imports=False)",
        "",
        f"{key} = {format_value(model)}",
        *_unused_lines(request.unused_modules),
    ]
    return "\n".join(header + [""] + body) + "\n"


def _spec_stride(stride: Any) -> str:
    """A stride as a spec writes it: ``4`` when both axes agree, else ``4x8`` (height x width)."""
    if stride is None:
        return "pooled"
    sh, sw = (format_value(s) for s in stride)
    return sh if sh == sw else f"{sh}x{sw}"


def base_reference(config: str, out: Path) -> str:
    """How the fragment names its base: the package scope, else a path relative to the fragment."""
    if "::" in config:
        return config
    path = Path(config).resolve()
    try:
        return os.path.relpath(path, out.resolve().parent)
    except ValueError:  # another drive
        return str(path)
