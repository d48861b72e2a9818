"""``adaptkit wrap``: probe a backbone, plan it into a stock config's head, write the fragment.

The OpenMMLab side of the emit stage, in three steps: ``wrap_request``
checks every argument into a ``WrapRequest`` before anything is built;
``build_fragment`` turns a plan and the stock config's model dict into the
fragment text (pure: no mmpose, no disk); ``run_wrap`` does the work in
between (probe, target, plan, auxiliary and distillation heads) and ends in
one atomic write.

A bare ``CHANNELS@STRIDE`` target (no stock config) gives a model fragment
instead: no ``_base_``, the backbone and adapter under ``adaptkit_model``, for
the user's own config to take (``build_model_fragment``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.nn as nn

from adaptkit.core.records import AdapterPlan, FeaturePolicy, MergeRule, Strategy, TargetSpec

if TYPE_CHECKING:
    from adaptkit.core.reach import ParameterReach
    from adaptkit.mm.checkpoint import LoadReport

__all__ = [
    "DistillRequest",
    "WrapRequest",
    "WrapResult",
    "build_fragment",
    "build_model_fragment",
    "run_wrap",
    "wrap_config",
    "wrap_request",
]


@dataclass(frozen=True)
class DistillRequest:
    """A feature-distillation head: align the student's feature at ``student_path`` to a frozen teacher.

    ``student_path`` None means the feature the main head reads; ``teacher_select``
    None means the teacher's last feature map.
    """

    teacher_config: str
    teacher_checkpoint: str
    student_path: str | None = None
    teacher_select: str | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class WrapResult:
    """What ``wrap_config`` wrote: the plan, the fragment text, and the checkpoint check."""

    plan: AdapterPlan
    text: str
    checkpoint: LoadReport | None  # how the --checkpoint file fits the backbone, when one was given


@dataclass(frozen=True)
class WrapRequest:
    """One checked ``wrap``: everything it needs, read before any model is built."""

    source: str
    config: str  # --target as given: a config (file or mmpose::name) or a CHANNELS@STRIDE spec
    spec: TargetSpec | None  # the parsed spec when --target is one: a model fragment, no _base_
    out: Path
    source_kwargs: tuple[tuple[str, Any], ...]
    input_shape: tuple[int, int, int, int] | None
    select: str | None
    strategy: Strategy
    policy: FeaturePolicy
    merge: MergeRule
    checkpoint: Path | None
    allow_partial: bool
    aux: tuple[tuple[str, float], ...]
    distill: DistillRequest | None
    force: bool
    command: str


def wrap_request(
    source: str,
    config: str | os.PathLike[str],
    out: Any,
    *,
    source_kwargs: dict[str, Any] | None = None,
    input_shape: Any = None,
    select: str | None = None,
    strategy: str | Strategy = Strategy.ADAPT_FEATURES,
    policy: str | FeaturePolicy = FeaturePolicy.AUTO,
    merge: str | MergeRule = MergeRule.SUM,
    checkpoint: str | None = None,
    allow_partial: bool = False,
    aux: Sequence[str | tuple[str, float]] = (),
    distill: DistillRequest | None = None,
    force: bool = False,
    command: str | None = None,
) -> WrapRequest:
    """Check every argument of a wrap (typed one-line errors) without building anything."""
    from adaptkit.core.emitting import check_destination
    from adaptkit.core.records import parse_enum
    from adaptkit.core.shapes import parse_input_shape
    from adaptkit.core.targets import SPEC_INPUT_DEFAULT, is_spec, target_from_spec
    from adaptkit.errors import PlanError, SourceError, TargetError
    from adaptkit.mm.aux_plans import check_weight, parse_aux
    from adaptkit.sources import is_config_source

    out_path = Path(out)
    check_destination(out_path, force)  # before any work: the file is written last
    if isinstance(config, os.PathLike):
        config = os.fspath(config)
    if not isinstance(config, str):
        raise TargetError(
            f"wrap's target is a config path, an mmpose::name or CHANNELS@STRIDE text, got {type(config).__name__}"
        )
    spec = target_from_spec(config.strip()) if is_spec(config) else None
    _refuse_overwriting_inputs(out_path, source, config if spec is None else None)
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    if spec is None and not is_config_source(config):
        raise TargetError(
            f"--target must be a config (file or mmpose::name) or CHANNELS@STRIDE (e.g. 32@4), got {config!r}"
        )
    if is_config_source(source):
        raise SourceError(
            "wrap needs a backbone SOURCE (zoo name, module:callable, file.py:Name), not a config: "
            "the config's own backbone is already in it"
        )
    try:
        chosen = parse_enum(Strategy, strategy, "strategy")
        rule = parse_enum(FeaturePolicy, policy, "feature policy"), parse_enum(MergeRule, merge, "merge rule")
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    if spec is not None:
        _refuse_config_options(config, chosen, bool(aux), distill is not None)
        shape = shape or parse_input_shape(SPEC_INPUT_DEFAULT)  # the same default as adaptkit plan
    from adaptkit.mm.checkpoint import check_checkpoint_path, read_state_dict

    if checkpoint is not None:
        check_checkpoint_path(checkpoint, "--checkpoint")
    if distill is not None:  # read now: a truncated teacher file must fail before the fragment is written
        read_state_dict(check_checkpoint_path(distill.teacher_checkpoint, "--distill-checkpoint"))
    aux_heads = tuple(parse_aux(a) if isinstance(a, str) else (a[0], check_weight(a[1])) for a in aux)
    return WrapRequest(
        source=source,
        config=config,
        spec=spec,
        out=out_path,
        source_kwargs=tuple((source_kwargs or {}).items()),
        input_shape=shape,
        select=select,
        strategy=chosen,
        policy=rule[0],
        merge=rule[1],
        checkpoint=Path(checkpoint) if checkpoint is not None else None,
        allow_partial=allow_partial,
        aux=aux_heads,
        distill=distill,
        force=force,
        command=command or f"adaptkit wrap {source} --target {config} --out {out_path.name}",
    )


def _refuse_config_options(spec: str, strategy: Strategy, aux: bool, distill: bool) -> None:
    """Options that read or change the stock config's head have nothing to work on with a bare spec."""
    from adaptkit.errors import OptionError

    needing = [
        name
        for name, given in (
            ("--aux", aux),
            ("--distill", distill),
            ("--strategy adapt-head", strategy is Strategy.ADAPT_HEAD),
        )
        if given
    ]
    if needing:
        raise OptionError(
            f"{' and '.join(needing)} need{'s' if len(needing) == 1 else ''} a config --target "
            f"(file or mmpose::name) whose head they read or change; {spec.strip()!r} is a bare CHANNELS@STRIDE spec"
        )


def build_model_fragment(
    adapter_plan: AdapterPlan, request: WrapRequest, *, unused_modules: tuple[str, ...] = ()
) -> str:
    """The base-less model fragment for a spec ``request``: pure (no mmpose, no disk)."""
    from adaptkit.core.emitting import ModelFragmentRequest, model_fragment_text

    if request.input_shape is None:
        raise ValueError("a model fragment is planned at a known input shape; wrap_request sets it")
    fragment = ModelFragmentRequest(
        source=_stored_source(request),
        source_kwargs=request.source_kwargs,
        checkpoint=_path_for_fragment(request.checkpoint, request.out) if request.checkpoint else None,
        allow_partial=request.allow_partial,
        command=request.command,
        input_shape=request.input_shape,
        file_name=request.out.name,
        unused_modules=unused_modules,
    )
    return model_fragment_text(adapter_plan, fragment)


def _stored_source(request: WrapRequest) -> str:
    """The SOURCE as the fragment stores it: a backbone file as ``{{fileDirname}}/...`` when it sits beside it."""
    from adaptkit.sources import SourceKind, source_kind

    if source_kind(request.source) == SourceKind.FILE:
        file_path, _, name = request.source.rpartition(":")
        return f"{_path_for_fragment(file_path, request.out)}:{name}"  # usable from any folder
    return request.source


def build_fragment(
    adapter_plan: AdapterPlan,
    request: WrapRequest,
    base_model: Mapping[str, Any],
    *,
    base: str,
    unused_modules: tuple[str, ...] = (),
    extra_model: tuple[tuple[str, Any], ...] = (),
) -> str:
    """The fragment text for ``request``: pure (no mmpose, no disk), given the stock config's ``model``.

    ``base`` is how the fragment names the stock config (``base_reference``).
    """
    from adaptkit.core.emitting import FragmentRequest, fragment_text
    from adaptkit.errors import PlanError

    neck = base_model.get("neck")
    kept = None
    if adapter_plan.target.kept_neck is not None:
        if not isinstance(neck, Mapping) or neck.get("type") != adapter_plan.target.kept_neck:
            raise PlanError(
                f"the plan keeps the stock {adapter_plan.target.kept_neck} neck but the config's neck is {neck!r}"
            )
        kept = tuple(dict(neck).items())
    fragment = FragmentRequest(
        source=_stored_source(request),
        source_kwargs=request.source_kwargs,
        base=base,
        base_has_neck=bool(neck),
        checkpoint=_path_for_fragment(request.checkpoint, request.out) if request.checkpoint else None,
        allow_partial=request.allow_partial,
        command=request.command,
        extra_model=extra_model,
        unused_modules=unused_modules,
        kept_neck=kept,
    )
    return fragment_text(adapter_plan, fragment)


def wrap_config(source: str, config: str | os.PathLike[str], out: Any, **options: Any) -> WrapResult:
    """Probe ``source``, plan it into ``config``'s head and write the fragment to ``out``.

    ``config`` may also be a bare ``CHANNELS@STRIDE`` spec (``"32@4"``): the
    fragment then has no ``_base_`` (see ``build_model_fragment``), the probe
    shape defaults to 2x3x640x640, and ``aux``, ``distill`` and the adapt-head
    strategy, which need a config's head, are refused.

    ``options`` are ``wrap_request``'s: ``aux`` adds auxiliary heatmap heads,
    each on the backbone output at a path, as ``"PATH[:WEIGHT]"`` strings or
    ``(path, weight)`` pairs; ``distill`` adds SCTNet's channel-wise
    distillation head against a frozen teacher; ``checkpoint`` is loaded into
    the backbone once here, so a missing, corrupt or ill-fitting file fails
    now rather than at training time. Everything is checked before the file
    is written, and the file is written atomically.
    """
    return run_wrap(wrap_request(source, config, out, **options))


def run_wrap(request: WrapRequest) -> WrapResult:
    """request -> probe, target, plan -> fragment text -> one atomic write."""
    from adaptkit.api import plan
    from adaptkit.core.emitting import base_reference, write_atomic
    from adaptkit.core.probing import probe
    from adaptkit.core.reach import probe_reach
    from adaptkit.core.targets import probe_shape
    from adaptkit.mm.openmmlab import load_config
    from adaptkit.mm.targets import target_from_config
    from adaptkit.sources import resolve_source

    model = resolve_source(request.source, **dict(request.source_kwargs))
    report = None
    if request.checkpoint is not None:
        from adaptkit.mm.checkpoint import load_checkpoint

        report = load_checkpoint(model, str(request.checkpoint), allow_partial=request.allow_partial)
    if request.spec is not None:
        return _run_model_wrap(request, model, report)
    target = target_from_config(request.config)
    # batch 2: train-mode BatchNorm on a globally pooled branch (SCTNet's DAPPM) needs it
    shape = probe_shape(target, request.input_shape, batch=2)
    result = probe(model, shape)
    reach = probe_reach(model, result)  # one trace: the planner's usage weighing and DDP's unused modules
    adapter_plan = plan(
        result,
        target,
        select=request.select,
        strategy=request.strategy,
        policy=request.policy,
        merge=request.merge,
        reach=reach,
    )
    base_cfg = load_config(request.config)
    aux_heads = list(request.aux)
    head_configs = _aux_configs(result, target, aux_heads)
    read_paths = [*adapter_plan.paths, *(path for path, _ in aux_heads)]
    if request.distill is not None:
        student_path = request.distill.student_path or adapter_plan.feature.path
        head_configs.append(_distill_config(result, shape, request.distill, student_path))
        read_paths.append(student_path)
    text = build_fragment(
        adapter_plan,
        request,
        base_cfg.model,
        base=base_reference(target.config or request.config, request.out),
        unused_modules=_unused_modules(reach, list(dict.fromkeys(read_paths))),
        extra_model=_aux_entries(head_configs, base_cfg.model.get("type")),
    )
    write_atomic(request.out, text, force=request.force)
    return WrapResult(plan=adapter_plan, text=text, checkpoint=report)


def _run_model_wrap(request: WrapRequest, model: nn.Module, report: LoadReport | None) -> WrapResult:
    """A spec target: probe at the request's shape, plan, write the base-less model fragment."""
    from adaptkit.api import plan
    from adaptkit.core.emitting import write_atomic
    from adaptkit.core.probing import probe
    from adaptkit.core.reach import probe_reach

    if request.spec is None or request.input_shape is None:
        raise ValueError("_run_model_wrap takes a spec request, which wrap_request gives an input shape")
    result = probe(model, request.input_shape)
    reach = probe_reach(model, result)
    adapter_plan = plan(
        result,
        request.spec,
        select=request.select,
        strategy=request.strategy,
        policy=request.policy,
        merge=request.merge,
        reach=reach,
    )
    text = build_model_fragment(adapter_plan, request, unused_modules=_unused_modules(reach, list(adapter_plan.paths)))
    write_atomic(request.out, text, force=request.force)
    return WrapResult(plan=adapter_plan, text=text, checkpoint=report)


def _aux_configs(result: Any, target: Any, aux_heads: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """One auxiliary heatmap head config per ``(path, weight)``."""
    from adaptkit.mm.aux_plans import aux_head_config, plan_aux

    return [
        aux_head_config(plan_aux(result, target, path), weight, target.num_keypoints or 17)
        for path, weight in aux_heads
    ]


def _distill_config(result: Any, shape: Any, request: DistillRequest, student_path: str) -> dict[str, Any]:
    """The DistillHead config: the student's feature planned onto the teacher's."""
    from adaptkit.mm.aux_plans import distill_head_config, plan_distill, teacher_target

    teacher, teacher_path = teacher_target(request.teacher_config, shape, request.teacher_select)
    return distill_head_config(
        plan_distill(result, teacher, student_path),
        request.teacher_config,
        request.teacher_checkpoint,
        request.weight,
        teacher_select=teacher_path,
    )


def _aux_entries(head_configs: list[dict[str, Any]], base_type: str | None) -> tuple:
    """The fragment's estimator type and auxiliary heads (none: nothing)."""
    if not head_configs:
        return ()
    from adaptkit.mm.aux_plans import aux_model_entries

    return aux_model_entries(head_configs, base_type=base_type)


def _unused_modules(reach: ParameterReach | None, paths: list[str]) -> tuple[str, ...]:
    """Top-level backbone modules none of ``paths`` depends on (DDP must be told of them)."""
    if reach is None or not set(paths) <= set(reach.reached):  # unknown: say nothing rather than guess
        return ()
    used = reach.names(paths)
    return tuple(dict.fromkeys(n.split(".")[0] for n in sorted(reach.sizes) if n not in used))


#: mmengine replaces this in a config file with the file's own folder when it loads it
FRAGMENT_DIR = "{{fileDirname}}"


def _path_for_fragment(path: str | Path, out: Path) -> str:
    """A file beside or below the fragment as ``{{fileDirname}}/rel/path`` (the two travel together), else absolute."""
    resolved = Path(path).resolve()
    try:
        relative = resolved.relative_to(Path(out).resolve().parent)
    except ValueError:
        return str(resolved)
    return f"{FRAGMENT_DIR}/{relative.as_posix()}"


def _refuse_overwriting_inputs(out: Path, source: str, config: str | None) -> None:
    """--out may not be the --target config (a fragment whose _base_ is itself) nor the SOURCE file."""
    from adaptkit.errors import EmitError

    inputs = [("--target", config)] if config is not None else []
    if isinstance(source, str) and ":" in source and "::" not in source:
        inputs.append(("SOURCE", source.rpartition(":")[0]))
    for what, name in inputs:
        try:
            same = "::" not in name and out.exists() and Path(name).exists() and out.samefile(name)
        except (OSError, ValueError):
            same = False
        if same:
            raise EmitError(f"--out {str(out)!r} is the {what} file itself; write the fragment to another name")
