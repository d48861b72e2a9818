"""Auxiliary heads by configuration: an estimator that trains extra heads on other backbone features.

Stock ``TopdownPoseEstimator`` refuses ``auxiliary_head``; people patch its
``__init__``. ``AuxTopdownPoseEstimator`` is a registered subclass that accepts
it, runs the backbone once, gives the neck's output to the main head and the
backbone's RAW output to each auxiliary head, which selects and shapes its own
feature through its own adapter (a ``ShapeAdapter`` planned by the same planner).
Auxiliary heads only add losses: ``predict`` and ``tensor`` modes never run them,
so predictions are the same with and without them.

Config (a fragment merges this into the stock ``model``)::

    model = dict(
        type='AuxTopdownPoseEstimator',
        auxiliary_head=dict(                      # or a list of such dicts
            type='AuxHeatmapHead', in_channels=64, out_channels=17,
            adapter=dict(type='ShapeAdapter', select='1', ...),
            loss_weight=0.4))

Loss names: a lone auxiliary head (a dict, or a list of one) prefixes its keys
with ``aux_`` (``aux_loss_kpt``, ``aux_acc_pose``); several heads use ``aux0_``,
``aux1_``... by position; a head's ``name`` overrides its prefix (``name='deep'``
-> ``deep_loss_kpt``). Only keys holding ``loss`` are weighted by ``loss_weight``
and summed by mmengine; accuracies are logged as they are.

The heads live under ``estimator.auxiliary_head``: the head itself when the
config gives a dict, an ``nn.ModuleList`` when it gives a list (as mmseg does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from adaptkit.errors import BuildError, ConfigError
from adaptkit.mm.aux_plans import AUX_PREFIX, DEFAULT_AUX_MID_CHANNELS, check_weight
from adaptkit.mm.openmmlab import quiet

with quiet():  # mmcv-lite's import-time warning stays out of adaptkit's output
    from mmengine.structures import PixelData
    from mmpose.evaluation.functional import pose_pck_accuracy
    from mmpose.models.heads.base_head import BaseHead
    from mmpose.models.pose_estimators.topdown import TopdownPoseEstimator
    from mmpose.models.utils.tta import flip_heatmaps
    from mmpose.registry import KEYPOINT_CODECS
    from mmpose.utils.tensor_utils import to_numpy

__all__ = ["AuxTopdownPoseEstimator", "AuxiliaryHead", "AuxHeatmapHead", "aux_prefixes"]


# -- the estimator ------------------------------------------------------------------------------


class AuxTopdownPoseEstimator(TopdownPoseEstimator):
    """``TopdownPoseEstimator`` that also trains auxiliary heads on raw backbone features.

    Args:
        auxiliary_head: one AuxiliaryHead config (dict) or a list of them; each
            carries its own ``adapter`` that picks its feature from the raw
            backbone output. None behaves exactly like TopdownPoseEstimator.
        The other arguments are TopdownPoseEstimator's, passed through unchanged.
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        neck: Mapping[str, Any] | None = None,
        head: Mapping[str, Any] | None = None,
        auxiliary_head: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone=backbone, neck=neck, head=head, **kwargs)
        self._aux_prefixes: list[str] = []
        if auxiliary_head is None:
            return
        self.auxiliary_head: AuxiliaryHead | nn.ModuleList
        if isinstance(auxiliary_head, Mapping):
            heads = [_build_aux_head(auxiliary_head)]
            self.auxiliary_head = heads[0]
        elif isinstance(auxiliary_head, Sequence) and not isinstance(auxiliary_head, str):
            if not auxiliary_head:
                raise BuildError("auxiliary_head is an empty list; drop it or give at least one head config")
            heads = [_build_aux_head(cfg) for cfg in auxiliary_head]
            self.auxiliary_head = nn.ModuleList(heads)
        else:
            raise BuildError(
                f"auxiliary_head must be a head config (dict) or a list of them, got {type(auxiliary_head).__name__}"
            )
        self._aux_prefixes = aux_prefixes(heads)

    @property
    def with_auxiliary_head(self) -> bool:
        """Whether the estimator trains auxiliary heads."""
        return getattr(self, "auxiliary_head", None) is not None

    @property
    def aux_heads(self) -> list[AuxiliaryHead]:
        """The auxiliary heads as a list (empty without any), whatever the config's form."""
        if not self.with_auxiliary_head:
            return []
        aux = self.auxiliary_head
        return [head for head in aux if isinstance(head, AuxiliaryHead)] if isinstance(aux, nn.ModuleList) else [aux]

    def extract_raw_and_feat(self, inputs: Tensor) -> tuple[Any, Any]:
        """Run the backbone once: its raw output (for auxiliary heads) and the neck's (for the head)."""
        raw = self.backbone(inputs)
        return raw, (self.neck(raw) if self.with_neck else raw)

    def extract_feat(self, inputs: Tensor) -> Any:
        return self.extract_raw_and_feat(inputs)[1]

    def loss(self, inputs: Tensor, data_samples: list[Any]) -> dict[str, Tensor]:
        """The main head's losses, plus each auxiliary head's, weighted and prefixed."""
        raw, feats = self.extract_raw_and_feat(inputs)
        losses: dict[str, Tensor] = {}
        if self.with_head:
            losses.update(self.head.loss(feats, data_samples, train_cfg=self.train_cfg))
        for prefix, aux in zip(self._aux_prefixes, self.aux_heads, strict=True):
            aux_losses = aux.aux_loss(raw, data_samples, train_cfg=self.train_cfg, inputs=inputs)
            losses.update({f"{prefix}_{key}": value for key, value in aux_losses.items()})
        return losses


def _build_aux_head(cfg: Mapping[str, Any]) -> AuxiliaryHead:
    from adaptkit.mm.openmmlab import ensure_mmpose

    head = ensure_mmpose().build(dict(cfg))  # ensure_mmpose registers adaptkit's heads
    if not isinstance(head, AuxiliaryHead):
        raise BuildError(
            f"auxiliary_head entries must be AuxiliaryHead subclasses (they select their own feature), "
            f"got {type(head).__name__}; use AuxHeatmapHead or subclass AuxiliaryHead"
        )
    return head


def aux_prefixes(heads: Sequence[AuxiliaryHead]) -> list[str]:
    """Loss-key prefix of each head: its ``name``, else ``aux`` alone or ``aux{i}`` among several."""
    prefixes = [head.name or (AUX_PREFIX if len(heads) == 1 else f"{AUX_PREFIX}{i}") for i, head in enumerate(heads)]
    repeated = sorted({p for p in prefixes if prefixes.count(p) > 1})
    if repeated:
        raise BuildError(f"auxiliary heads share the loss name(s) {', '.join(repeated)}; give each a distinct name")
    return prefixes


# -- auxiliary heads ----------------------------------------------------------------------------


class AuxiliaryHead(BaseHead):
    """Base of heads that only train: adapter + forward + loss, weighted by ``loss_weight``.

    The estimator calls ``aux_loss(backbone_output, ...)``: the head's adapter
    picks and shapes its feature from the raw backbone output (a 1-tuple, the
    way necks return), ``forward``/``loss`` see that tuple, and every ``loss*``
    key is multiplied by ``loss_weight``. Defaults do real work, so a subclass
    overrides only what differs: ``forward`` returns the adapted map itself
    (a linear head when the adapter projects to the keypoints), ``loss`` is the
    heatmap loss against the codec's target heatmaps (the same targets the
    main head uses), ``predict`` decodes with ``decoder`` and refuses without one.

    Args:
        adapter: ShapeAdapter config (or module) applied to the raw backbone output;
            None passes that output through (it must then be a tuple of maps).
        loss: loss config (or module); the default ``loss`` calls it as a keypoint loss
            (KeypointMSELoss with target weights when None).
        loss_weight: multiplies every loss this head returns (positive).
        decoder: codec config; only needed to ``predict`` with this head alone.
        name: loss-key prefix; None lets the estimator name it (``aux``, ``aux0``...).
    """

    def __init__(
        self,
        adapter: Mapping[str, Any] | nn.Module | None = None,
        loss: Mapping[str, Any] | nn.Module | None = None,
        loss_weight: float = 1.0,
        decoder: Mapping[str, Any] | None = None,
        name: str | None = None,
        init_cfg: Any = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.loss_weight = check_weight(loss_weight, f"{type(self).__name__} loss_weight", BuildError)
        if name is not None and (not isinstance(name, str) or not name.isidentifier()):
            raise BuildError(f"auxiliary head name must be an identifier such as 'aux0', got {name!r}")
        self.name = name
        self.adapter = _build_module(adapter, "adapter")
        self.loss_module = _build_module(
            loss if loss is not None else dict(type="KeypointMSELoss", use_target_weight=True), "loss"
        )
        self.decoder = KEYPOINT_CODECS.build(dict(decoder)) if decoder is not None else None

    def adapt(self, backbone_output: Any) -> tuple[Tensor, ...]:
        """The head's input: its adapter applied to the raw backbone output."""
        if self.adapter is not None:
            return tuple(self.adapter(backbone_output))
        if isinstance(backbone_output, Tensor):
            return (backbone_output,)
        return tuple(backbone_output)

    def head_inputs(self, backbone_output: Any, inputs: Tensor | None) -> tuple[Tensor, ...]:
        """What ``loss`` is given during training; heads that need more (a teacher's view) extend it."""
        return self.adapt(backbone_output)

    def aux_loss(
        self,
        backbone_output: Any,
        batch_data_samples: list[Any],
        train_cfg: Mapping[str, Any] | None = None,
        inputs: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The weighted losses of this head from the raw backbone output (the estimator's entry point)."""
        feats = self.head_inputs(backbone_output, inputs)
        losses = self.loss(feats, batch_data_samples, train_cfg=dict(train_cfg or {}))
        return {key: value * self.loss_weight if "loss" in key else value for key, value in losses.items()}

    def forward(self, feats: tuple[Tensor, ...]) -> Tensor:
        """The adapted map itself; subclasses add layers."""
        return feats[-1]

    def loss(
        self,
        feats: tuple[Tensor, ...],
        batch_data_samples: list[Any],
        train_cfg: Mapping[str, Any] = {},  # noqa: B006  (BaseHead's signature)
    ) -> dict[str, Tensor]:
        """Unweighted heatmap loss (``loss_kpt``) and PCK accuracy (``acc_pose``) against the codec targets."""
        heatmaps = self.forward(feats)
        targets = torch.stack([d.gt_fields.heatmaps for d in batch_data_samples])
        if heatmaps.shape != targets.shape:
            raise BuildError(
                f"{type(self).__name__} outputs {list(heatmaps.shape)} but the target heatmaps are {list(targets.shape)}; "
                "plan its adapter to the heatmap stride (plan_aux) and set out_channels to the keypoints"
            )
        weights = torch.cat([d.gt_instance_labels.keypoint_weights for d in batch_data_samples])
        losses = {"loss_kpt": self.loss_module(heatmaps, targets, weights)}
        if train_cfg.get("compute_acc", True):
            _, accuracy, _ = pose_pck_accuracy(
                output=to_numpy(heatmaps), target=to_numpy(targets), mask=to_numpy(weights) > 0
            )
            losses["acc_pose"] = torch.tensor(accuracy, device=targets.device)
        return losses

    def predict(
        self,
        feats: Any,
        batch_data_samples: list[Any] | None,
        test_cfg: Mapping[str, Any] = {},  # noqa: B006  (BaseHead's signature)
    ) -> Any:
        """Decode this head's heatmaps with its codec (adapted ``feats``, or ``[feats, flipped]`` for flip test)."""
        if self.decoder is None:
            raise ConfigError(
                f"{type(self).__name__} has no decoder: auxiliary heads only train; "
                "give it decoder=<the codec config> to predict with it alone"
            )
        if test_cfg.get("flip_test", False):
            plain, flipped = feats
            flip_indices = batch_data_samples[0].metainfo["flip_indices"] if batch_data_samples else None
            mirrored = flip_heatmaps(
                self.forward(flipped),
                flip_mode=test_cfg.get("flip_mode", "heatmap"),
                flip_indices=flip_indices,
                shift_heatmap=test_cfg.get("shift_heatmap", False),
            )
            heatmaps = (self.forward(plain) + mirrored) * 0.5
        else:
            heatmaps = self.forward(feats)
        preds = self.decode(heatmaps)
        if test_cfg.get("output_heatmaps", False):
            return preds, [PixelData(heatmaps=h) for h in heatmaps.detach()]
        return preds


def _build_module(cfg: Mapping[str, Any] | nn.Module | None, what: str) -> Any:
    """A module given as is, or built from its config with mmpose's MODELS (adaptkit's types registered)."""
    if cfg is None or isinstance(cfg, nn.Module):
        return cfg
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise BuildError(f"{what} must be a module or a config with a 'type', got {cfg!r}")
    from adaptkit.mm.openmmlab import ensure_mmpose

    return ensure_mmpose().build(dict(cfg))


class AuxHeatmapHead(AuxiliaryHead):
    """A light heatmap head: 3x3 conv + BN + ReLU, then a 1x1 conv to the keypoints.

    Its adapter brings the chosen feature to the codec's heatmap stride, so the
    output matches the target heatmaps the main head is trained on.

    Args:
        in_channels: channels of the adapted feature (the plan's out_channels).
        out_channels: keypoints.
        mid_channels: width of the 3x3 conv.
        The rest are AuxiliaryHead's.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int = DEFAULT_AUX_MID_CHANNELS,
        adapter: Mapping[str, Any] | nn.Module | None = None,
        loss: Mapping[str, Any] | nn.Module | None = None,
        loss_weight: float = 1.0,
        decoder: Mapping[str, Any] | None = None,
        name: str | None = None,
        init_cfg: Any = None,
    ) -> None:
        if min(in_channels, out_channels, mid_channels) <= 0:
            raise BuildError(
                f"AuxHeatmapHead channels must be positive, got in={in_channels}, mid={mid_channels}, out={out_channels}"
            )
        if init_cfg is None:  # mmpose's heatmap-head init: small normal convs, unit BN
            init_cfg = [
                dict(type="Normal", layer=["Conv2d"], std=0.001),
                dict(type="Constant", layer="BatchNorm2d", val=1),
            ]
        super().__init__(
            adapter=adapter, loss=loss, loss_weight=loss_weight, decoder=decoder, name=name, init_cfg=init_cfg
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=1),
        )

    def forward(self, feats: tuple[Tensor, ...]) -> Tensor:
        return self.layers(feats[-1])
