"""Feature distillation from a frozen teacher: SCTNet's channel-wise alignment loss, as an auxiliary head.

SCTNet trains its CNN to look like a transformer teacher: each channel of the
student's (adapted) feature and of the teacher's is turned into a distribution
over positions (softmax over H*W at temperature tau), and the student pays
KL(teacher || student). Here that is ``ChannelWiseDistillLoss``, and
``DistillHead`` is an ``AuxiliaryHead`` that holds the teacher: it aligns one
backbone feature to the teacher's (a 1x1 ShapeAdapter planned by the same
planner: student channels -> teacher channels, resized to the teacher's
stride) and returns ``loss_distill`` (``aux_loss_distill`` in the estimator).

The teacher is built from an mmpose/mmengine config (its backbone and neck)
and a local checkpoint, put in eval mode with ``requires_grad`` off, and kept
OUT of the module tree: it is not in ``parameters()`` (so no optimizer sees
it), not in ``state_dict()`` (checkpoints stay the student's), and
``train()``/``init_weights()`` never reach it. It follows the input's device on use.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from adaptkit.core.adapter import resize_to
from adaptkit.core.tree import iter_tensors, select
from adaptkit.errors import BuildError, ConfigError
from adaptkit.mm.aux_plans import DEFAULT_TAU, check_weight
from adaptkit.mm.estimator import AuxiliaryHead

__all__ = [
    "ChannelWiseDistillLoss",
    "DistillHead",
    "build_teacher",
]


class ChannelWiseDistillLoss(nn.Module):
    """KL(teacher || student) of per-channel spatial distributions, times tau^2, over N*C.

    For maps S, T of shape (N, C, H, W): p_T = softmax(T / tau) and
    log p_S = log_softmax(S / tau) over the H*W positions of each channel;
    loss = sum_{n,c,i} p_T * (log p_T - log p_S) * tau^2 / (N * C).
    The teacher is detached: gradients reach the student side only.
    """

    def __init__(self, tau: float = DEFAULT_TAU, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.tau = check_weight(tau, "distillation temperature tau", BuildError)
        self.loss_weight = check_weight(loss_weight, "distillation loss_weight", BuildError)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        if student.dim() != 4 or student.shape != teacher.shape:
            raise BuildError(
                f"distillation needs student and teacher maps of one (N, C, H, W) shape, got {list(student.shape)} "
                f"and {list(teacher.shape)}; plan the student adapter to the teacher's channels and stride"
            )
        n, c = student.shape[:2]
        log_s = F.log_softmax(student.flatten(2) / self.tau, dim=-1)
        log_t = F.log_softmax(teacher.detach().flatten(2) / self.tau, dim=-1)
        kl = (log_t.exp() * (log_t - log_s)).sum()
        return kl * (self.tau**2) / (n * c) * self.loss_weight

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


def build_teacher(config: str, checkpoint: str | Path) -> nn.Module:
    """The frozen teacher (eval mode, no grad) from ``config``'s backbone+neck and a local checkpoint.

    The checkpoint may be the teacher's whole saved estimator: its head keys
    are ignored, but every backbone/neck weight must load (CheckpointError otherwise).
    """
    from adaptkit.mm.checkpoint import load_checkpoint
    from adaptkit.mm.openmmlab import ConfigBackbone, build_model, load_config

    cfg = load_config(config)
    model_cfg = cfg.get("model")
    if not isinstance(model_cfg, Mapping) or "backbone" not in model_cfg:
        raise ConfigError(f"teacher config {config!r} has no model.backbone")
    neck_cfg = model_cfg.get("neck")
    teacher = ConfigBackbone(build_model(model_cfg["backbone"]), build_model(neck_cfg) if neck_cfg else None)
    load_checkpoint(teacher, checkpoint, strict=False)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def _teacher_feature(output: Any, path: str | None) -> Tensor:
    if path is None:  # the last map, the one mmpose heads read
        tensors = [t for _, t in iter_tensors(output)]
        if not tensors:
            raise BuildError("the teacher returns no tensor to distill from")
        return tensors[-1]
    try:
        return select(output, path)
    except KeyError as exc:
        known = ", ".join(p for p, _ in iter_tensors(output))
        raise BuildError(f"teacher_select: {exc.args[0]}; the teacher returns: {known}") from None


class DistillHead(AuxiliaryHead):
    """Aligns one student feature to a frozen teacher's with ChannelWiseDistillLoss.

    Args:
        teacher_config: mmpose/mmengine config (file or ``mmpose::name``) whose backbone+neck is the teacher.
        teacher_checkpoint: local checkpoint of that teacher.
        adapter: ShapeAdapter config (or module) taking the raw student backbone
            output to the teacher's channels and stride (``plan_distill``).
        teacher_select: path of the teacher's feature in its output; None takes the last tensor.
        loss: loss config (or module); None is ChannelWiseDistillLoss(tau=4).
        loss_weight, name, init_cfg: AuxiliaryHead's.
    """

    def __init__(
        self,
        teacher_config: str,
        teacher_checkpoint: str,
        adapter: Mapping[str, Any] | nn.Module | None = None,
        teacher_select: str | None = None,
        loss: Mapping[str, Any] | nn.Module | None = None,
        loss_weight: float = 1.0,
        name: str | None = None,
        init_cfg: Any = None,
    ) -> None:
        super().__init__(
            adapter=adapter,
            loss=loss if loss is not None else ChannelWiseDistillLoss(DEFAULT_TAU),
            loss_weight=loss_weight,
            name=name,
            init_cfg=init_cfg,
        )
        self.teacher_config = str(teacher_config)
        self.teacher_checkpoint = str(teacher_checkpoint)
        self.teacher_select = teacher_select
        # a tuple keeps the teacher out of parameters(), state_dict(), train() and init_weights()
        self._frozen = (build_teacher(self.teacher_config, self.teacher_checkpoint),)

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher (not a registered submodule)."""
        return self._frozen[0]

    @torch.no_grad()
    def teacher_feature(self, inputs: Tensor) -> Tensor:
        """The teacher's feature for ``inputs``, computed without gradients, in eval mode."""
        teacher = self.teacher
        first = next(teacher.parameters(), None)
        if first is not None and first.device != inputs.device:
            teacher.to(inputs.device)
        teacher.eval()
        return _teacher_feature(teacher(inputs), self.teacher_select)

    def head_inputs(self, backbone_output: Any, inputs: Tensor | None) -> tuple[Tensor, ...]:
        """(adapted student feature, teacher feature): what ``loss`` compares."""
        if inputs is None:
            raise BuildError("DistillHead needs the input images for its teacher; train it in AuxTopdownPoseEstimator")
        return (self.adapt(backbone_output)[-1], self.teacher_feature(inputs))

    def forward(self, feats: tuple[Tensor, ...]) -> Tensor:
        """The adapted student feature, resized to the teacher's map when one is given."""
        student = feats[0]
        if len(feats) < 2:
            return student
        height, width = feats[1].shape[-2:]
        return resize_to(student, (height, width))

    def loss(
        self,
        feats: tuple[Tensor, ...],
        batch_data_samples: Any = None,
        train_cfg: Mapping[str, Any] = {},  # noqa: B006  (BaseHead's signature)
    ) -> dict[str, Tensor]:
        """Unweighted ``loss_distill`` between ``feats = (student, teacher)``."""
        if len(feats) != 2:
            raise BuildError(f"DistillHead.loss compares (student, teacher) maps, got {len(feats)} tensor(s)")
        return {"loss_distill": self.loss_module(self.forward(feats), feats[1])}
