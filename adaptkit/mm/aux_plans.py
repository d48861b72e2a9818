"""Planning and config helpers for auxiliary and distillation heads: records in, config dicts out.

Pure (no mmpose import at load), so the wrap pipeline and the CLI use them
without registering any module; the heads themselves live in
``adaptkit.mm.estimator`` and ``adaptkit.mm.distill``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adaptkit.core.building import adapter_config
from adaptkit.core.records import AdapterPlan, ProbeResult, Strategy, TargetSpec
from adaptkit.errors import AdaptkitError, PlanError

__all__ = [
    "DEFAULT_AUX_WEIGHT",
    "AUX_PREFIX",
    "DEFAULT_AUX_MID_CHANNELS",
    "DEFAULT_TAU",
    "check_weight",
    "check_aux_path",
    "parse_aux",
    "heatmap_stride",
    "plan_aux",
    "aux_head_config",
    "aux_model_entries",
    "teacher_target",
    "plan_distill",
    "distill_head_config",
]

#: weight of an auxiliary loss when ``--aux PATH`` gives none (SCTNet's and mmseg's deep supervision use 0.4)
DEFAULT_AUX_WEIGHT = 0.4
#: prefix of a lone auxiliary head's loss keys; several heads add their index (``aux0``, ``aux1``...)
AUX_PREFIX = "aux"
#: mid channels of AuxHeatmapHead's 3x3 conv: light, the head only supervises
DEFAULT_AUX_MID_CHANNELS = 64
#: SCTNet's distillation temperature
DEFAULT_TAU = 4.0


# -- auxiliary heatmap heads ---------------------------------------------------------------------


def check_weight(value: Any, what: str = "auxiliary loss weight", error: type[AdaptkitError] = PlanError) -> float:
    """``value`` as a positive finite float, or a one-line ``error`` (PlanError when planning, BuildError in modules)."""
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise error(f"{what} must be a positive number, got {value!r}") from None
    if not math.isfinite(weight) or weight <= 0:
        raise error(f"{what} must be a positive number, got {value!r}")
    return weight


def check_aux_path(result: ProbeResult, path: str, option: str = "--aux") -> None:
    """PlanError unless ``path`` names a feature map the backbone returns (not the input passed through)."""
    try:
        feature = result.feature(path)
    except KeyError as exc:
        raise PlanError(f"{option}: {exc.args[0]}") from None
    if feature.is_input:
        raise PlanError(f"{option} {path!r} names the input image passed through, not a feature; pick another path")
    if not feature.is_spatial:
        raise PlanError(
            f"{option} {path!r} is a {feature.layout.value} tensor of shape {list(feature.shape)}, not a feature map"
        )


def parse_aux(text: str, result: ProbeResult | None = None) -> tuple[str, float]:
    """``--aux PATH[:WEIGHT]`` -> ``(path, weight)``; the weight defaults to DEFAULT_AUX_WEIGHT (0.4).

    ``PATH`` is a probe path ("1", "2.1.1", "stage3"); with ``result`` it must
    name a feature map the backbone returns. The weight must be a positive number.
    """
    if not isinstance(text, str) or not text.strip():
        raise PlanError("--aux needs PATH[:WEIGHT], e.g. 1:0.4")
    path, sep, weight_text = text.strip().rpartition(":")
    if not sep:
        path, weight = weight_text, DEFAULT_AUX_WEIGHT
    else:
        weight = check_weight(weight_text.strip(), f"--aux {text!r}: the weight")
    path = path.strip()
    if not path:
        raise PlanError(f"--aux {text!r} names no feature path; write PATH[:WEIGHT], e.g. 1:0.4")
    if result is not None:
        check_aux_path(result, path)
    return path, weight


def heatmap_stride(target: TargetSpec) -> tuple[float, float]:
    """The (height, width) stride of the codec's heatmaps, which an auxiliary heatmap head must produce.

    From the codec's input and heatmap sizes when known, else the head's
    input stride divided by its own upsampling.
    """
    from adaptkit.core.targets import exact

    if target.input_size is not None and target.heatmap_size is not None:
        (iw, ih), (hw, hh) = target.input_size, target.heatmap_size
        return (exact(ih / hh), exact(iw / hw))
    stride = target.stride
    if stride is None:
        raise PlanError(
            f"head {target.head_type or 'target'} pools its map and makes no heatmap; "
            "an auxiliary heatmap head has no stride to match"
        )
    return (exact(stride[0] / target.head_upsample), exact(stride[1] / target.head_upsample))


def plan_aux(result: ProbeResult, target: TargetSpec, path: str) -> AdapterPlan:
    """Plan the adapter of an auxiliary heatmap head on feature ``path``.

    Select ``path`` and resize it to the heatmap stride, keeping its channels
    (the head's 3x3 conv reads them directly; a projection before it would be
    redundant). ``target`` is the main head's target (``target_from_config``).
    """
    from adaptkit.core.planning import plan_features

    check_aux_path(result, path)
    feature = result.feature(path)
    aux_target = TargetSpec.single(
        feature.channels,
        heatmap_stride(target),
        num_keypoints=target.num_keypoints,
        heatmap_size=target.heatmap_size,
        input_size=target.input_size,
        head_type="AuxHeatmapHead",
        source=f"auxiliary head on {path!r}",
        config=target.config,
    )
    return plan_features(result, aux_target, select=path, strategy=Strategy.ADAPT_HEAD)


def aux_head_config(
    plan: AdapterPlan,
    weight: float,
    num_keypoints: int,
    index: int | None = None,
    mid_channels: int = DEFAULT_AUX_MID_CHANNELS,
) -> dict[str, Any]:
    """The config dict of one AuxHeatmapHead: its adapter (from ``plan``), widths and loss weight.

    ``plan`` must bring its feature to the heatmap stride (``plan_aux`` does).
    ``index`` None lets the estimator name the losses (``aux_`` alone, ``aux{i}_``
    in a list); an int fixes the name to ``aux{index}``.
    """
    weight = check_weight(weight)
    if not isinstance(num_keypoints, int) or num_keypoints <= 0:
        raise PlanError(f"an auxiliary heatmap head needs a positive number of keypoints, got {num_keypoints!r}")
    target = plan.target
    if target.input_size is not None and target.heatmap_size is not None:
        want = heatmap_stride(target)
        if target.stride is None or tuple(target.stride) != want:
            raise PlanError(
                f"the auxiliary head's plan resizes to stride {target.stride} but the heatmaps are at stride "
                f"{list(want)}; plan it with plan_aux"
            )
    cfg: dict[str, Any] = dict(
        type="AuxHeatmapHead",
        in_channels=plan.out_channels,
        out_channels=num_keypoints,
        mid_channels=mid_channels,
        adapter=adapter_config(plan),
        loss=dict(type="KeypointMSELoss", use_target_weight=True),
        loss_weight=weight,
    )
    if index is not None:
        cfg["name"] = f"{AUX_PREFIX}{index}"
    return cfg


def aux_model_entries(
    aux_configs: Sequence[Mapping[str, Any]], base_type: str | None = None
) -> tuple[tuple[str, Any], ...]:
    """``FragmentRequest.extra_model`` entries: the estimator type and its auxiliary heads.

    One config is written as a dict (``model.auxiliary_head`` is that head),
    several as a list. No configs -> no entries (the stock estimator stays).
    ``base_type`` is the stock config's model type; only TopdownPoseEstimator can be swapped.
    """
    if not aux_configs:
        return ()
    if base_type is not None and base_type not in ("TopdownPoseEstimator", "AuxTopdownPoseEstimator"):
        raise PlanError(f"auxiliary heads need a TopdownPoseEstimator config, but this config's model is {base_type!r}")
    heads: Any = dict(aux_configs[0]) if len(aux_configs) == 1 else [dict(cfg) for cfg in aux_configs]
    return (("type", "AuxTopdownPoseEstimator"), ("auxiliary_head", heads))


# -- distillation heads --------------------------------------------------------------------------


def teacher_target(
    teacher_config: str, input_shape: Sequence[int], select: str | None = None
) -> tuple[TargetSpec, str]:
    """What the student must be aligned to: the teacher's feature (channels, stride) and its path.

    Probes the config's backbone+neck at ``input_shape`` (no weights needed);
    ``select`` picks the path, else the last feature map.
    """
    from adaptkit.core.probing import probe
    from adaptkit.core.targets import exact
    from adaptkit.sources import resolve_source

    try:
        result = probe(resolve_source(teacher_config), tuple(input_shape))
    except AdaptkitError as exc:
        raise PlanError(f"cannot probe teacher {teacher_config!r}: {exc}") from None
    maps = [f for f in result.features if f.is_spatial and not f.is_input]
    if select is not None:
        try:
            feature = result.feature(select)
        except KeyError as exc:
            raise PlanError(f"teacher: {exc.args[0]}") from None
        if feature not in maps:
            raise PlanError(f"teacher path {select!r} is not a feature map ({list(feature.shape)}); pick another")
    elif maps:
        feature = maps[-1]
    else:
        raise PlanError(f"teacher {teacher_config!r} returns no feature map to distill from")
    spec = TargetSpec.single(
        feature.channels,
        (exact(feature.stride[0]), exact(feature.stride[1])),
        source=f"teacher {teacher_config}",
        config=str(teacher_config),
    )
    return spec, feature.path


def plan_distill(result: ProbeResult, teacher: TargetSpec, path: str) -> AdapterPlan:
    """The student adapter: feature ``path`` projected to the teacher's channels at its stride."""
    from adaptkit.core.planning import plan_features

    check_aux_path(result, path, "--distill-from")
    return plan_features(result, teacher, select=path, strategy=Strategy.ADAPT_FEATURES)


def distill_head_config(
    plan: AdapterPlan,
    teacher_config: str,
    teacher_checkpoint: str,
    weight: float,
    teacher_select: str | None = None,
    tau: float = DEFAULT_TAU,
    index: int | None = None,
) -> dict[str, Any]:
    """The config dict of one DistillHead (an ``auxiliary_head`` entry for ``aux_model_entries``)."""
    from adaptkit.core.building import adapter_config

    weight = check_weight(weight, "distillation weight")
    tau = check_weight(tau, "distillation temperature tau")
    if not Path(teacher_checkpoint).is_file():
        raise PlanError(f"teacher checkpoint {teacher_checkpoint!r} does not exist")
    config = str(teacher_config)
    if "::" not in config:
        config = str(Path(config).resolve())  # the fragment may be used from another folder
    cfg: dict[str, Any] = dict(
        type="DistillHead",
        teacher_config=config,
        teacher_checkpoint=str(Path(teacher_checkpoint).resolve()),
        teacher_select=teacher_select,
        adapter=adapter_config(plan),
        loss=dict(type="ChannelWiseDistillLoss", tau=tau),
        loss_weight=weight,
    )
    if index is not None:
        cfg["name"] = f"aux{index}"
    return cfg
