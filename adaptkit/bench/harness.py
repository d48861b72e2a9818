"""The benchmark harness: build naive, planned, fused and whole-estimator variants, and time every cell.

``run_bench`` takes a request checked by ``request.make_request``, builds each target with
the adapter, learns the shapes each variant takes, then times every variant
at every batch and input size with ``timing.measure``, then times every
fused vs planned pair of the run together (``pairing.time_speedups``) and
returns frozen records; it never prints (``progress`` is told what runs next).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from adaptkit.bench.pairing import PLACEMENTS, Pair, SpeedUp, time_speedups
from adaptkit.bench.request import TARGETS, BenchRequest, resolve_target
from adaptkit.bench.timing import Environment, Measurement, environment, measure
from adaptkit.bench.timing import slug as _slug
from adaptkit.errors import AdaptkitError, BenchError, FuseError

if TYPE_CHECKING:
    from adaptkit.core.adapter import ShapeAdapter

__all__ = [
    "Variant",
    "BenchResult",
    "run_bench",
    "count_cells",
]


class Variant(str, enum.Enum):
    """What one measurement times."""

    HEAD = "head"  # the stock head alone, on the input it expects: the reference
    NAIVE_HEAD = "naive-head"  # the hand fix: head rebuilt for the raw channels, F.interpolate of its output
    NAIVE_RESIZE = "naive-resize"  # resize the raw feature first, then project, then the head
    PLANNED = "planned"  # adaptkit's ShapeAdapter + the stock head
    FUSED = "fused"  # adaptkit.fuse of the above
    ESTIMATOR = "estimator"  # backbone + planned adapter + head
    ESTIMATOR_FUSED = "estimator-fused"  # backbone + fused adapter and head


@dataclass(frozen=True)
class BenchResult:
    request: BenchRequest
    environment: Environment
    measurements: tuple[Measurement, ...]
    fusion: tuple[tuple[str, Any], ...]  # (target, FusionPlan)
    started: str  # ISO time
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    speedups: tuple[SpeedUp, ...] = ()  # fused vs planned, timed in pairs (adaptkit.bench.pairing)


# ---------------------------------------------------------------------------------------------
# targets and inputs


@dataclass
class _Target:
    """One target built for the benchmark (mutable working state, never returned)."""

    name: str
    model: Any  # the mmpose estimator with the planned adapter
    fused: Any  # adaptkit.fuse(model); None when fuse does not know the head (SimCC, RTMCC)
    adapter: ShapeAdapter  # model.neck
    naive_head: nn.Module | None  # None when the head has no hand fix (its output is not one heatmap)
    resize_first: nn.Module | None  # the adapter in resize-then-project order; None when it does not resize
    plan: Any


def _target_name(spec: str) -> str:
    for short, config in TARGETS.items():
        if spec.lower() in (short, config):
            return short
    stem = Path(spec.split("::")[-1]).stem
    return stem or spec


def _build_target(source: str, spec: str, workdir: Path, device: torch.device, channels_last: bool) -> _Target:
    from adaptkit.core.adapter import ShapeAdapter
    from adaptkit.core.fusion import fuse, plan_fusion
    from adaptkit.mm.fragments import wrap_config
    from adaptkit.mm.openmmlab import build_model, load_config

    name = _target_name(spec)
    fragment = workdir / f"{_slug(name)}.py"
    wrap_config(source, resolve_target(spec), fragment, force=True)
    cfg = load_config(fragment)
    model = build_model(cfg.model).eval().to(device)
    adapter = model.neck
    if not isinstance(adapter, ShapeAdapter):
        raise BenchError(f"{name}: the wrapped model's neck is {type(adapter).__name__}, not adaptkit's ShapeAdapter")
    head_cfg = cfg.model.head.to_dict() if hasattr(cfg.model.head, "to_dict") else dict(cfg.model.head)
    head_cfg["in_channels"] = adapter.in_channels  # the hand fix: change in_channels, interpolate later
    try:
        naive_head: nn.Module | None = build_model(head_cfg).eval().to(device)
    except AdaptkitError:  # a head that cannot take the raw channels at all: no hand fix to time
        naive_head = None
    resize_first = None
    if adapter.resizes and adapter.proj is not None:
        resize_first = ShapeAdapter(
            select=adapter.select,
            in_channels=adapter.in_channels,
            out_channels=adapter.out_channels,
            feature_stride=adapter.feature_stride,
            target_stride=adapter.target_stride,
            layout=adapter.layout.value,
            project_first=False,
            prefix_tokens=adapter.prefix_tokens,
            grid=adapter.grid,
        ).to(device)
        resize_first.load_state_dict(adapter.state_dict())
        resize_first.eval()
    try:
        fused, plan = fuse(model, channels_last=channels_last), plan_fusion(model)
    except FuseError:  # a head fuse cannot fold: time it planned only
        fused, plan = None, None
    return _Target(name, model, fused, adapter, naive_head, resize_first, plan)


@dataclass
class _Inputs:
    """Random inputs for one target, input size and batch."""

    image: torch.Tensor
    feats: Any  # the backbone's output structure with the selected feature at this batch
    feature: torch.Tensor  # the selected feature as an NCHW map
    head_input: torch.Tensor  # what the stock head expects
    out_hw: tuple[int, int] | None  # the heatmap size the planned model gives; None for other outputs (SimCC)


@dataclass(frozen=True)
class _Shapes:
    feats: Any  # batch-1 backbone output
    head_input: tuple[int, ...]
    out_hw: tuple[int, int] | None


def _shapes(target: _Target, hw: tuple[int, int], device: torch.device) -> _Shapes:
    """Run the target once at batch 1 to learn the shapes each variant takes; BenchError when it cannot run."""
    from adaptkit.core.tree import select

    model, adapter = target.model, target.adapter
    image = torch.randn(1, 3, hw[0], hw[1], device=device)
    try:
        with torch.no_grad():
            feats = model.backbone(image)
            feature = adapter.to_map(select(feats, adapter.select))
            head_input = adapter(feats)[-1]
            out = model.head((head_input,))
    except (RuntimeError, ValueError, KeyError, IndexError) as exc:
        cause = " ".join(str(exc).split())[:160]
        raise BenchError(
            f"the model cannot run at input {hw[0]}x{hw[1]} ({cause}); try a multiple of the backbone's largest stride"
        ) from None
    stride = adapter.feature_stride
    if (feature.shape[-2] * stride[0], feature.shape[-1] * stride[1]) != (float(hw[0]), float(hw[1])):
        raise BenchError(
            f"input {hw[0]}x{hw[1]} is not a multiple of the feature stride {stride[0]:g}x{stride[1]:g}; pick one that is"
        )
    heatmap = isinstance(out, torch.Tensor) and out.dim() == 4  # SimCC heads answer with (x, y) vectors
    out_hw = (int(out.shape[-2]), int(out.shape[-1])) if heatmap else None
    return _Shapes(feats, tuple(head_input.shape[1:]), out_hw)


def _inputs(target: _Target, shapes: _Shapes, hw: tuple[int, int], batch: int, device: torch.device) -> _Inputs:
    from adaptkit.core.tree import replace, select

    adapter = target.adapter
    raw = select(shapes.feats, adapter.select)
    feature_raw = torch.randn((batch, *raw.shape[1:]), device=device)
    return _Inputs(
        image=torch.randn(batch, 3, hw[0], hw[1], device=device),
        feats=replace(shapes.feats, adapter.select, feature_raw),
        feature=adapter.to_map(feature_raw),
        head_input=torch.randn((batch, *shapes.head_input), device=device),
        out_hw=shapes.out_hw,
    )


def _variants(target: _Target, out_hw: tuple[int, int] | None, estimator: bool) -> list[Variant]:
    """What this target is timed as: the hand fixes it has, and fused only when fuse knows its head."""
    variants = [Variant.HEAD]
    if target.naive_head is not None and out_hw is not None:  # the hand fix interpolates a heatmap
        variants.append(Variant.NAIVE_HEAD)
    if target.resize_first is not None:
        variants.append(Variant.NAIVE_RESIZE)
    variants.append(Variant.PLANNED)
    if target.fused is not None:
        variants.append(Variant.FUSED)
    if estimator:
        variants += [Variant.ESTIMATOR] + ([Variant.ESTIMATOR_FUSED] if target.fused is not None else [])
    return variants


def _neck_then_head(neck: nn.Module, head: nn.Module, feats: Any) -> Any:
    return head(neck(feats))


def _calls(target: _Target, x: _Inputs, estimator: bool) -> list[tuple[Variant, Callable[[], Any]]]:
    from adaptkit.core.adapter import resize_to

    model, fused, naive_head, resize_first = target.model, target.fused, target.naive_head, target.resize_first
    table: dict[Variant, Callable[[], Any]] = {
        Variant.HEAD: lambda: model.head((x.head_input,)),
        Variant.NAIVE_HEAD: lambda: resize_to(naive_head((x.feature,)), x.out_hw),  # type: ignore[misc,arg-type]
        Variant.NAIVE_RESIZE: lambda: model.head(resize_first(x.feats)),  # type: ignore[misc]
        Variant.PLANNED: functools.partial(_neck_then_head, model.neck, model.head, x.feats),
        Variant.ESTIMATOR: lambda: model(x.image, None, mode="tensor"),
        Variant.ESTIMATOR_FUSED: lambda: fused(x.image, None, mode="tensor"),
    }
    if fused is not None:  # a partial, not a closure: the pairing copies and pickles it (so is PLANNED)
        table[Variant.FUSED] = functools.partial(_neck_then_head, fused.neck, fused.head, x.feats)
    return [(v, table[v]) for v in _variants(target, x.out_hw, estimator)]


def _estimator_at(request: BenchRequest, hw: tuple[int, int], batch: int) -> bool:
    if not request.estimator:
        return False
    if request.quick:  # the whole estimator only where it is cheap
        return batch == min(request.batches) and hw == min(request.inputs, key=lambda s: s[0] * s[1])
    return True


def count_cells(request: BenchRequest, per_target: Sequence[tuple[int, int]]) -> int:
    """How many cells ``run_bench`` times, given each target's (neck + head, whole-estimator) variant counts."""
    total = 0
    for hw in request.inputs:
        for batch in request.batches:
            est = _estimator_at(request, hw, batch)
            total += sum(n + (e if est else 0) for n, e in per_target)
    return total


def _counts(target: _Target, out_hw: tuple[int, int] | None) -> tuple[int, int]:
    """(neck + head steps, whole-estimator steps) per size and batch; the paired speed-up is a step too."""
    with_estimator, without = len(_variants(target, out_hw, True)), len(_variants(target, out_hw, False))
    return without + (target.fused is not None), with_estimator - without


# ---------------------------------------------------------------------------------------------
# the run


def run_bench(request: BenchRequest, progress: Callable[[str, int, int], None] | None = None) -> BenchResult:
    """Build every target with ``request.source`` and time every variant; returns the records.

    ``progress(description, done, total)`` is called before each cell and
    once at the end ("done"); ``total`` is 0 while the targets are built.
    Raises BenchError (or the adaptkit error of the stage that failed)
    before any timing when a target cannot be built or run at a size.
    """
    saved_threads = torch.get_num_threads()
    if request.threads is not None:
        torch.set_num_threads(request.threads)
    try:
        return _run(request, progress or (lambda *_: None))
    finally:
        torch.set_num_threads(saved_threads)


def _all_shapes(
    targets: Sequence[_Target], inputs: Sequence[tuple[int, int]], device: torch.device
) -> tuple[dict[tuple[str, tuple[int, int]], _Shapes], list[str]]:
    """Shapes per target and size. A size one target cannot run (a SimCC head fixed to its codec's size)
    is skipped for that target with a note; a target that runs at no size is a BenchError."""
    shapes: dict[tuple[str, tuple[int, int]], _Shapes] = {}
    skipped: list[str] = []
    for t in targets:
        errors = []
        for hw in inputs:
            try:
                shapes[(t.name, hw)] = _shapes(t, hw, device)
            except BenchError as exc:
                errors.append((hw, exc))
        if len(errors) == len(inputs):
            raise errors[0][1]
        skipped += [f"{t.name}: not timed at {hw[0]}x{hw[1]}: {exc}" for hw, exc in errors]
    return shapes, skipped


def _run(request: BenchRequest, report: Callable[[str, int, int], None]) -> BenchResult:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    clock = time.perf_counter()
    env = environment(request.device)  # before any work of ours: the load is other people's
    device = torch.device(request.device.value)
    targets: list[_Target] = []
    with tempfile.TemporaryDirectory(prefix="adaptkit-bench-") as tmp:
        for spec in request.targets:
            report(f"building {request.source} -> {_target_name(spec)}", 0, 0)
            targets.append(_build_target(request.source, spec, Path(tmp), device, request.channels_last))
    shapes, skipped = _all_shapes(targets, request.inputs, device)
    total = 0
    for t in targets:
        sizes = [hw for hw in request.inputs if (t.name, hw) in shapes]
        one = dataclasses.replace(request, inputs=tuple(sizes))
        total += count_cells(one, [_counts(t, shapes[(t.name, sizes[0])].out_hw)])
    measurements: list[Measurement] = []
    pairs: list[Pair] = []
    for hw in request.inputs:
        for batch in request.batches:
            for target in targets:
                if (target.name, hw) not in shapes:
                    continue
                inputs = _inputs(target, shapes[(target.name, hw)], hw, batch, device)
                calls = dict(_calls(target, inputs, _estimator_at(request, hw, batch)))
                where = f"{target.name} {hw[0]}x{hw[1]} b{batch}"
                for variant, fn in calls.items():
                    report(f"{where} {variant.value}", len(measurements), total)
                    measurements.append(_cell(request, env, target.name, variant, fn, hw, batch, device))
                if Variant.FUSED in calls:
                    pairs.append(_pair(target.name, calls, hw, batch))
                del inputs, calls
    done, label = len(measurements), f"fused vs planned, {len(pairs)} pairs in turn"
    report(label, done, total)
    speedups = time_speedups(
        pairs, device=device, precision=request.precision, cuda_graph=request.cuda_graphs,
        threshold=request.threshold, budget_s=request.budget_s, loaded=env.loaded,
        processes=request.pair_processes, progress=lambda finished: report(label, done + finished, total),
    )  # fmt: skip
    report("done", total, total)
    notes = list(skipped)
    for t in targets:
        if t.fused is None:
            notes.append(f"{t.name}: fuse does not fold this head, so it is timed planned only")
    timed = [p for p in speedups if p is not None]
    if timed:
        where = f"pooled from {timed[0].processes} fresh processes" if timed[0].processes > 1 else "in this process"
        copies = timed[0].placements - 1
        notes.append(f"fused vs planned: rounds over the calls and {copies} copies of them in memory, {where}")
    if request.quick:
        notes.append("quick: the whole estimator was timed only at the smallest batch and input size")
    if env.loaded:
        notes.append(f"the 1-minute load was {env.load_average[0]:.2f} on {env.cores} cores at the start")  # type: ignore[index]
    return BenchResult(
        request=request,
        environment=env,
        measurements=tuple(measurements),
        fusion=tuple((t.name, t.plan) for t in targets if t.plan is not None),
        started=started,
        seconds=time.perf_counter() - clock,
        notes=tuple(notes),
        speedups=tuple(timed),  # a pair out of GPU memory is left out: its cells say so
    )


def _pair(target: str, calls: dict[Variant, Callable[[], Any]], hw: tuple[int, int], batch: int) -> Pair:
    """Planned vs fused neck + head. Their calls carry their modules and input as arguments, so the pairing
    can copy them to fresh memory and ship them to fresh processes (without the backbones: they never run)."""
    planned, fused = Variant.PLANNED, Variant.FUSED
    return Pair(calls[planned], calls[fused], planned.value, fused.value, target, hw, batch, placements=PLACEMENTS)


def _cell(
    request: BenchRequest,
    env: Environment,
    target: str,
    variant: Variant,
    fn: Callable[[], Any],
    hw: tuple[int, int],
    batch: int,
    device: torch.device,
) -> Measurement:
    try:
        return measure(
            fn,
            variant=variant.value,
            target=target,
            input_hw=hw,
            batch=batch,
            device=device,
            threshold=request.threshold,
            budget_s=request.budget_s,
            precision=request.precision,
            cuda_graph=request.cuda_graphs,
            loaded=env.loaded,
        )
    except torch.cuda.OutOfMemoryError:
        nan = float("nan")
        return Measurement(
            variant=variant.value, target=target, input_hw=hw, batch=batch, device=request.device.value,
            precision=request.precision.value, median_ms=nan, iqr_ms=nan, p25_ms=nan, p75_ms=nan, samples=0,
            calls_per_sample=0, times_ms=(), per_image_ms=nan, throughput=nan, memory_bytes=None, memory_kind="none",
            cuda_graph=False, flags=("out of GPU memory",), measurement=None, note="out of GPU memory",
        )  # fmt: skip
