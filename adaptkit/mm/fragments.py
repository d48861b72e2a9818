"""``adaptkit wrap``: probe a backbone, plan it into a stock config's head, write the fragment.

The OpenMMLab side of the emit stage: it reads the stock config, adds
auxiliary and distillation heads, checks a checkpoint, and hands the pure
fragment text (``adaptkit.core.emitting``) to one atomic write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.nn as nn

from adaptkit.core.records import AdapterPlan, Strategy

if TYPE_CHECKING:
    from adaptkit.mm.checkpoint import LoadReport

__all__ = ["DistillRequest", "WrapResult", "wrap_config"]


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


def wrap_config(
    source: str,
    config: str,
    out: Any,
    *,
    source_kwargs: dict[str, Any] | None = None,
    input_shape: Any = None,
    select: str | None = None,
    strategy: str | Strategy = Strategy.ADAPT_FEATURES,
    checkpoint: str | None = None,
    allow_partial: bool = False,
    aux: Sequence[str | tuple[str, float]] = (),
    distill: DistillRequest | None = None,
    force: bool = False,
    command: str | None = None,
) -> WrapResult:
    """Probe ``source``, plan it into ``config``'s head and write the fragment to ``out``.

    ``aux`` adds auxiliary heatmap heads, each on the backbone output at a
    path, as ``"PATH[:WEIGHT]"`` strings or ``(path, weight)`` pairs;
    ``distill`` adds SCTNet's channel-wise distillation head against a
    frozen teacher.
    ``checkpoint`` is loaded into the backbone once here, so a missing,
    corrupt or ill-fitting file fails now rather than at training time.
    Everything is checked before the file is written, and the file is
    written atomically.
    """
    from pathlib import Path

    from adaptkit.api import plan
    from adaptkit.core.emitting import FragmentRequest, base_reference, check_destination, fragment_text, write_atomic
    from adaptkit.core.probing import probe
    from adaptkit.core.shapes import parse_input_shape
    from adaptkit.core.targets import probe_shape
    from adaptkit.errors import SourceError, TargetError
    from adaptkit.mm.openmmlab import load_config
    from adaptkit.mm.targets import target_from_config
    from adaptkit.sources import SourceKind, is_config_source, resolve_source, source_kind

    out_path = Path(out)
    check_destination(out_path, force)  # before any work: the file is written last
    _refuse_overwriting_inputs(out_path, source, config)
    if input_shape is not None:
        input_shape = parse_input_shape(input_shape)  # a typo fails before the backbone is built
    if not is_config_source(config):
        raise TargetError(
            f"wrap writes a config fragment, so --target must be a config (file or mmpose::name), got {config!r}"
        )
    if is_config_source(source):
        raise SourceError(
            "wrap needs a backbone SOURCE (zoo name, module:callable, file.py:Name), not a config: "
            "the config's own backbone is already in it"
        )
    from adaptkit.mm.checkpoint import check_checkpoint_path, read_state_dict

    if checkpoint is not None:
        check_checkpoint_path(checkpoint, "--checkpoint")
    if distill is not None:  # read now: a truncated teacher file must fail before the fragment is written
        read_state_dict(check_checkpoint_path(distill.teacher_checkpoint, "--distill-checkpoint"))
    from adaptkit.mm.aux_plans import check_weight, parse_aux

    aux_heads = [parse_aux(a) if isinstance(a, str) else (a[0], check_weight(a[1])) for a in aux]
    kwargs = dict(source_kwargs or {})
    model = resolve_source(source, **kwargs)
    report = None
    if checkpoint is not None:
        from adaptkit.mm.checkpoint import load_checkpoint

        report = load_checkpoint(model, checkpoint, allow_partial=allow_partial)
    target = target_from_config(config)
    # batch 2: train-mode BatchNorm on a globally pooled branch (SCTNet's DAPPM) needs it
    shape = parse_input_shape(probe_shape(target, input_shape, batch=2))
    result = probe(model, shape)
    adapter_plan = plan(result, target, select=select, strategy=strategy)
    base_cfg = load_config(config)
    head_configs = _aux_configs(result, target, aux_heads)
    read_paths = [adapter_plan.feature.path, *(path for path, _ in aux_heads)]
    if distill is not None:
        student_path = distill.student_path or adapter_plan.feature.path
        head_configs.append(_distill_config(result, shape, distill, student_path))
        read_paths.append(student_path)
    extra_model = _aux_entries(head_configs, base_cfg.model.get("type"))
    unused_modules = _unused_modules(model, shape, read_paths)
    stored_source = source
    if source_kind(source) == SourceKind.FILE:
        file_path, _, name = source.rpartition(":")
        stored_source = f"{Path(file_path).resolve()}:{name}"  # the fragment may be used from another folder
    request = FragmentRequest(
        source=stored_source,
        source_kwargs=tuple(kwargs.items()),
        base=base_reference(target.config or config, out_path),
        base_has_neck=bool(base_cfg.model.get("neck")),
        checkpoint=str(Path(checkpoint).resolve()) if checkpoint else None,
        allow_partial=allow_partial,
        command=command or f"adaptkit wrap {source} --target {config} --out {out_path.name}",
        unused_modules=unused_modules,
        extra_model=extra_model,
    )
    text = fragment_text(adapter_plan, request)
    write_atomic(out_path, text, force=force)
    return WrapResult(plan=adapter_plan, text=text, checkpoint=report)


def _refuse_overwriting_inputs(out: Path, source: str, config: str) -> None:
    """--out may not be the --target config (a fragment whose _base_ is itself) nor the SOURCE file."""
    from adaptkit.errors import EmitError

    inputs = [("--target", config)]
    if isinstance(source, str) and ":" in source and "::" not in source:
        inputs.append(("SOURCE", source.rpartition(":")[0]))
    for what, name in inputs:
        try:
            same = "::" not in name and out.exists() and Path(name).exists() and out.samefile(name)
        except (OSError, ValueError):
            same = False
        if same:
            raise EmitError(f"--out {str(out)!r} is the {what} file itself; write the fragment to another name")


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


def _unused_modules(model: nn.Module, shape: Any, paths: list[str]) -> tuple[str, ...]:
    """Top-level backbone modules none of ``paths`` depends on (DDP must be told of them)."""
    from adaptkit.core.reach import unreached_parameters

    names = unreached_parameters(model, shape, paths)  # None: unknown, so say nothing rather than guess
    return tuple(dict.fromkeys(n.split(".")[0] for n in sorted(names or ())))
