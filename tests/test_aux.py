"""Auxiliary heads by configuration: AuxTopdownPoseEstimator, AuxiliaryHead, AuxHeatmapHead, the config helpers.

Built from a real fragment (``wrap_config('sctnet-s', HRNet-W32)``) plus the
estimator entries, with real mmpose/mmengine parts and codec-made targets.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adaptkit.core.emitting import format_value
from adaptkit.core.planning import plan_features
from adaptkit.core.probing import probe
from adaptkit.core.records import ProbeResult, Strategy, TargetSpec
from adaptkit.errors import BuildError, ConfigError, PlanError
from adaptkit.mm.aux_plans import (
    DEFAULT_AUX_WEIGHT,
    aux_head_config,
    aux_model_entries,
    heatmap_stride,
    parse_aux,
    plan_aux,
)
from adaptkit.mm.estimator import AuxHeatmapHead, AuxiliaryHead, AuxTopdownPoseEstimator
from adaptkit.mm.fragments import wrap_config
from adaptkit.mm.openmmlab import build_model, load_config
from adaptkit.sources import resolve_source

from .conftest import HRNET

WEIGHT = 0.4
COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


@dataclasses.dataclass(frozen=True)
class Wrapped:
    folder: Path
    fragment: Path
    result: ProbeResult
    target: TargetSpec


@pytest.fixture(scope="module")
def wrapped(tmp_path_factory: pytest.TempPathFactory) -> Wrapped:
    folder = tmp_path_factory.mktemp("aux")
    fragment = folder / "fragment.py"
    adapter_plan = wrap_config("sctnet-s", HRNET, fragment).plan
    result = probe(resolve_source("sctnet-s"), (2, 3, 256, 192))
    return Wrapped(folder, fragment, result, adapter_plan.target)  # the target read from HRNet's config


def write_aux_fragment(wrapped: Wrapped, aux_configs: list[dict[str, Any]], name: str) -> Path:
    """A fragment over the wrap fragment that adds the estimator entries, as the emitter writes them."""
    model = dict(aux_model_entries(aux_configs))
    path = wrapped.folder / name
    path.write_text(f"_base_ = ['./{wrapped.fragment.name}']\n\nmodel = {format_value(model)}\n")
    return path


def aux_config(wrapped: Wrapped, path: str = "1", weight: float = WEIGHT, index: int | None = None) -> dict[str, Any]:
    adapter_plan = plan_aux(wrapped.result, wrapped.target, path)
    return aux_head_config(adapter_plan, weight, wrapped.target.num_keypoints or 17, index)


@pytest.fixture(scope="module")
def aux_cfg(wrapped: Wrapped) -> Any:
    return load_config(write_aux_fragment(wrapped, [aux_config(wrapped)], "aux_one.py"))


def make_batch(cfg: Any, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, list[Any]]:
    """Images and PoseDataSamples whose targets come from the config's own codec."""
    from mmengine.structures import InstanceData, PixelData
    from mmpose.registry import KEYPOINT_CODECS
    from mmpose.structures import PoseDataSample

    codec = KEYPOINT_CODECS.build(cfg.codec)
    width, height = cfg.codec.input_size
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(batch):
        keypoints = rng.uniform((8, 8), (width - 8, height - 8), size=(1, 17, 2)).astype(np.float32)
        encoded = codec.encode(keypoints, np.ones((1, 17), dtype=np.float32))
        sample = PoseDataSample(metainfo=dict(input_size=(width, height), flip_indices=COCO_FLIP))
        sample.gt_fields = PixelData(heatmaps=torch.from_numpy(encoded["heatmaps"]))
        sample.gt_instance_labels = InstanceData(keypoint_weights=torch.from_numpy(encoded["keypoint_weights"]))
        sample.gt_instances = InstanceData(
            bbox_centers=np.array([[width / 2, height / 2]], dtype=np.float32),
            bbox_scales=np.array([[width, height]], dtype=np.float32),
            bboxes=np.array([[0, 0, width, height]], dtype=np.float32),
            bbox_scores=np.ones(1, dtype=np.float32),
        )
        samples.append(sample)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=generator), samples


@pytest.fixture(scope="module")
def aux_model(aux_cfg: Any) -> AuxTopdownPoseEstimator:
    torch.manual_seed(0)
    model = build_model(aux_cfg.model)
    model.init_weights()
    return model


# -- the estimator --------------------------------------------------------------------------------


def test_fragment_builds_the_aux_estimator(aux_cfg: Any, aux_model: AuxTopdownPoseEstimator) -> None:
    assert aux_cfg.model.type == "AuxTopdownPoseEstimator"
    assert aux_cfg.model.backbone.type == "ForeignBackbone"  # the wrap fragment is kept underneath
    assert isinstance(aux_model, AuxTopdownPoseEstimator)
    assert aux_model.with_auxiliary_head
    head = aux_model.auxiliary_head
    assert isinstance(head, AuxHeatmapHead)  # a dict in the config -> the head itself
    assert head.adapter.select == "1" and head.adapter.out_channels == 64  # x2: 2c channels, kept
    assert head.loss_weight == pytest.approx(WEIGHT)


def test_aux_output_matches_the_codec_heatmaps(aux_cfg: Any, aux_model: AuxTopdownPoseEstimator) -> None:
    inputs, samples = make_batch(aux_cfg)
    aux_model.eval()
    with torch.no_grad():
        heatmaps = aux_model.auxiliary_head(aux_model.auxiliary_head.adapt(aux_model.backbone(inputs)))
    assert tuple(heatmaps.shape) == (2, 17, *samples[0].gt_fields.heatmaps.shape[-2:]) == (2, 17, 64, 48)


def test_aux_loss_is_weighted_and_prefixed(aux_cfg: Any, aux_model: AuxTopdownPoseEstimator) -> None:
    inputs, samples = make_batch(aux_cfg)
    aux_model.eval()  # no drop-path noise: two passes see the same features
    with torch.no_grad():
        losses = aux_model.loss(inputs, samples)
        head = aux_model.auxiliary_head
        unweighted = head.loss(head.adapt(aux_model.backbone(inputs)), samples)
        main = aux_model.head.loss(aux_model.extract_feat(inputs), samples)
    assert {"loss_kpt", "acc_pose", "aux_loss_kpt", "aux_acc_pose"} <= set(losses)
    assert unweighted["loss_kpt"] > 0
    assert torch.allclose(losses["aux_loss_kpt"], WEIGHT * unweighted["loss_kpt"], rtol=1e-6, atol=0)
    assert torch.allclose(losses["aux_acc_pose"], unweighted["acc_pose"])  # accuracies are not weighted
    assert torch.allclose(losses["loss_kpt"], main["loss_kpt"])  # the main head's loss is untouched


def test_aux_gradients_reach_the_head_and_its_backbone_path(aux_cfg: Any, aux_model: AuxTopdownPoseEstimator) -> None:
    inputs, samples = make_batch(aux_cfg)
    aux_model.train()
    aux_model.zero_grad(set_to_none=True)
    aux_model.loss(inputs, samples)["aux_loss_kpt"].backward()
    body = aux_model.backbone.body

    def reached(module: torch.nn.Module) -> bool:
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert reached(aux_model.auxiliary_head.layers)
    assert reached(body.layer2) and reached(body.conv1)  # x2 = layer2's output
    assert not reached(body.spp) and not reached(body.layer3)  # they feed path 0 only, not the aux feature
    assert not reached(aux_model.head) and not reached(aux_model.neck)
    aux_model.zero_grad(set_to_none=True)


def test_predictions_identical_with_and_without_aux(
    wrapped: Wrapped, aux_cfg: Any, aux_model: AuxTopdownPoseEstimator
) -> None:
    plain = build_model(load_config(wrapped.fragment).model)
    state = {k: v for k, v in aux_model.state_dict().items() if not k.startswith("auxiliary_head.")}
    assert any(k.startswith("auxiliary_head.") for k in aux_model.state_dict())
    plain.load_state_dict(state, strict=True)  # the same weights, key for key
    aux_model.eval()
    plain.eval()
    calls: list[int] = []
    hook = aux_model.auxiliary_head.register_forward_hook(lambda *_: calls.append(1))
    inputs, samples = make_batch(aux_cfg, seed=1)
    _, plain_samples = make_batch(aux_cfg, seed=1)
    try:
        with torch.no_grad():
            ours = aux_model.predict(inputs, samples)
            theirs = plain.predict(inputs, plain_samples)
            tensors = (aux_model(inputs, None, mode="tensor"), plain(inputs, None, mode="tensor"))
    finally:
        hook.remove()
    assert calls == []  # the auxiliary head never runs at inference
    assert aux_cfg.model.test_cfg.flip_test  # the stock flip test went through extract_feat twice
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a.pred_instances.keypoints, b.pred_instances.keypoints)
        np.testing.assert_array_equal(a.pred_instances.keypoint_scores, b.pred_instances.keypoint_scores)
    assert torch.equal(*tensors)


def test_several_heads_are_numbered(wrapped: Wrapped, aux_cfg: Any) -> None:
    configs = [aux_config(wrapped, "1", 0.4), aux_config(wrapped, "2.1.2", 0.2)]  # x2 (stride 8), x3 (stride 16)
    cfg = load_config(write_aux_fragment(wrapped, configs, "aux_two.py"))
    assert isinstance(cfg.model.auxiliary_head, list)
    model = build_model(cfg.model)
    assert isinstance(model.auxiliary_head, torch.nn.ModuleList) and len(model.aux_heads) == 2
    inputs, samples = make_batch(aux_cfg)
    model.eval()
    with torch.no_grad():
        losses = model.loss(inputs, samples)
    assert {"aux0_loss_kpt", "aux1_loss_kpt", "aux0_acc_pose", "aux1_acc_pose"} <= set(losses)
    assert "aux_loss_kpt" not in losses
    assert model.auxiliary_head[1].adapter.select == "2.1.2"


def test_index_names_the_losses(wrapped: Wrapped, aux_cfg: Any) -> None:
    cfg = load_config(write_aux_fragment(wrapped, [aux_config(wrapped, "1", index=3)], "aux_named.py"))
    model = build_model(cfg.model)
    inputs, samples = make_batch(aux_cfg)
    model.eval()
    with torch.no_grad():
        assert "aux3_loss_kpt" in model.loss(inputs, samples)


def test_without_auxiliary_head_it_is_the_stock_estimator(wrapped: Wrapped, aux_cfg: Any) -> None:
    cfg = load_config(wrapped.fragment)
    cfg.model.type = "AuxTopdownPoseEstimator"
    model = build_model(cfg.model)
    assert not model.with_auxiliary_head and model.aux_heads == []
    inputs, samples = make_batch(aux_cfg)
    model.eval()
    with torch.no_grad():
        assert set(model.loss(inputs, samples)) == {"loss_kpt", "acc_pose"}


# -- the head on its own --------------------------------------------------------------------------


def test_aux_head_predicts_with_a_codec_and_refuses_without(aux_cfg: Any, aux_model: AuxTopdownPoseEstimator) -> None:
    inputs, samples = make_batch(aux_cfg)
    aux_model.eval()
    with torch.no_grad():
        feats = aux_model.auxiliary_head.adapt(aux_model.backbone(inputs))
        with pytest.raises(ConfigError, match="auxiliary heads only train"):
            aux_model.auxiliary_head.predict(feats, samples)
        decoding = AuxHeatmapHead(64, 17, decoder=dict(aux_cfg.codec))
        decoding.eval()
        preds = decoding.predict(feats, samples)
        flipped = aux_model.auxiliary_head.adapt(aux_model.backbone(inputs.flip(-1)))
        flip_preds, heatmaps = decoding.predict([feats, flipped], samples, dict(flip_test=True, output_heatmaps=True))
    assert len(preds) == 2 and preds[0].keypoints.shape == (1, 17, 2)
    assert len(flip_preds) == 2 and flip_preds[0].keypoints.shape == (1, 17, 2)
    assert heatmaps[0].heatmaps.shape == (17, 64, 48)


def test_bare_auxiliary_head_is_a_linear_head(aux_cfg: Any, aux_model: AuxTopdownPoseEstimator) -> None:
    """The base class alone trains: its adapter projects to the keypoints at the heatmap stride."""
    from mmpose.models.losses import KeypointMSELoss

    adapter = dict(
        type="ShapeAdapter", select="1", in_channels=64, out_channels=17, feature_stride=[8, 8], target_stride=[4, 4]
    )
    head = AuxiliaryHead(adapter=adapter, loss_weight=0.5)
    inputs, samples = make_batch(aux_cfg)
    aux_model.eval()
    with torch.no_grad():
        raw = aux_model.backbone(inputs)
        losses = head.aux_loss(raw, samples)
        heatmaps = head.adapter(raw)[0]
    targets = torch.stack([s.gt_fields.heatmaps for s in samples])
    weights = torch.cat([s.gt_instance_labels.keypoint_weights for s in samples])
    expected = 0.5 * KeypointMSELoss(use_target_weight=True)(heatmaps, targets, weights)
    assert set(losses) == {"loss_kpt", "acc_pose"}
    assert torch.allclose(losses["loss_kpt"], expected)


def test_aux_head_rejects_a_feature_at_the_wrong_stride(aux_cfg: Any, aux_model: AuxTopdownPoseEstimator) -> None:
    inputs, samples = make_batch(aux_cfg)
    adapter = dict(type="ShapeAdapter", select="1", in_channels=64, feature_stride=[8, 8], target_stride=[8, 8])
    head = AuxHeatmapHead(64, 17, adapter=adapter)
    with torch.no_grad(), pytest.raises(BuildError, match="heatmap stride"):
        head.aux_loss(aux_model.backbone(inputs), samples)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(loss_weight=0), "loss_weight must be a positive number"),
        (dict(loss_weight="heavy"), "loss_weight must be a positive number"),
        (dict(name="aux-0"), "must be an identifier"),
        (dict(adapter=dict(select="1")), "config with a 'type'"),
        (dict(in_channels=0), "channels must be positive"),
    ],
)
def test_aux_head_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    settings: dict[str, Any] = {"in_channels": 64, "out_channels": 17, **kwargs}
    with pytest.raises(BuildError, match=match):
        AuxHeatmapHead(**settings)


def _estimator_kwargs(cfg: Any) -> dict[str, Any]:
    model = cfg.model.to_dict()
    return {k: model[k] for k in ("backbone", "neck", "head", "test_cfg")}


def test_estimator_rejects_a_plain_head(aux_cfg: Any) -> None:
    plain = dict(type="HeatmapHead", in_channels=64, out_channels=17, deconv_out_channels=None)
    with pytest.raises(BuildError, match="must be AuxiliaryHead subclasses"):
        AuxTopdownPoseEstimator(**_estimator_kwargs(aux_cfg), auxiliary_head=plain)


def test_estimator_rejects_shared_names_and_empty_lists(wrapped: Wrapped, aux_cfg: Any) -> None:
    twin = aux_config(wrapped, "1", index=0)
    with pytest.raises(BuildError, match="share the loss name"):
        AuxTopdownPoseEstimator(**_estimator_kwargs(aux_cfg), auxiliary_head=[twin, dict(twin)])
    with pytest.raises(BuildError, match="empty list"):
        AuxTopdownPoseEstimator(**_estimator_kwargs(aux_cfg), auxiliary_head=[])
    with pytest.raises(BuildError, match="dict\\) or a list"):
        AuxTopdownPoseEstimator(**_estimator_kwargs(aux_cfg), auxiliary_head="AuxHeatmapHead")


# -- the pure helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1:0.4", ("1", 0.4)), ("1", ("1", DEFAULT_AUX_WEIGHT)), ("2.1.1:1", ("2.1.1", 1.0)), (" 1 : 2.5 ", ("1", 2.5))],
)
def test_parse_aux(text: str, expected: tuple[str, float]) -> None:
    assert parse_aux(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1:abc", "weight must be a positive number, got 'abc'"),
        ("1:0", "weight must be a positive number"),
        ("1:-0.4", "weight must be a positive number"),
        ("1:nan", "weight must be a positive number"),
        ("1:inf", "weight must be a positive number"),
        ("1:", "weight must be a positive number"),
        (":0.4", "names no feature path"),
        ("", "needs PATH\\[:WEIGHT\\]"),
    ],
)
def test_parse_aux_rejects(text: str, match: str) -> None:
    with pytest.raises(PlanError, match=match):
        parse_aux(text)


def test_parse_aux_checks_the_path_against_the_probe(wrapped: Wrapped) -> None:
    assert parse_aux("2.1.2:0.1", wrapped.result) == ("2.1.2", 0.1)
    with pytest.raises(PlanError, match=r"no feature at path '9'.*0, 1, 2\.0, 2\.1\.0, 2\.1\.1, 2\.1\.2"):
        parse_aux("9:0.4", wrapped.result)
    with pytest.raises(PlanError, match="input image"):
        parse_aux("2.0", wrapped.result)


def test_plan_aux_resizes_to_the_heatmap_stride(wrapped: Wrapped) -> None:
    assert heatmap_stride(wrapped.target) == (4, 4)
    x5 = plan_aux(wrapped.result, wrapped.target, "2.1.1")  # 256 ch at stride 32
    assert x5.out_channels == 256 and x5.target.stride == (4, 4)
    assert [s.kind.value for s in x5.steps] == ["select", "resize"]  # no projection: the head's conv reads it
    assert x5.steps[-1].out_shape == (2, 256, 64, 48)
    with pytest.raises(PlanError, match="no feature at path '7'"):
        plan_aux(wrapped.result, wrapped.target, "7")


def test_heatmap_stride_without_codec_sizes() -> None:
    deconv_head = TargetSpec.single(2048, (32, 32), head_upsample=8)
    assert heatmap_stride(deconv_head) == (4, 4)


def test_aux_head_config_checks(wrapped: Wrapped) -> None:
    good = plan_aux(wrapped.result, wrapped.target, "1")
    cfg = aux_head_config(good, 0.4, 17)
    assert cfg["type"] == "AuxHeatmapHead" and cfg["adapter"]["type"] == "ShapeAdapter"
    assert cfg["in_channels"] == 64 and cfg["out_channels"] == 17 and "name" not in cfg
    assert aux_head_config(good, 0.4, 17, index=1)["name"] == "aux1"
    with pytest.raises(PlanError, match="weight must be a positive number"):
        aux_head_config(good, -1, 17)
    with pytest.raises(PlanError, match="positive number of keypoints"):
        aux_head_config(good, 0.4, 0)
    wrong = dataclasses.replace(wrapped.target, inputs=(dataclasses.replace(wrapped.target.last, stride=(8, 8)),))
    at_8 = plan_features(wrapped.result, wrong, select="1", strategy=Strategy.ADAPT_HEAD)
    with pytest.raises(PlanError, match="plan it with plan_aux"):
        aux_head_config(at_8, 0.4, 17)


def test_aux_model_entries(wrapped: Wrapped) -> None:
    one = aux_config(wrapped)
    assert aux_model_entries([]) == ()
    entries = dict(aux_model_entries([one], base_type="TopdownPoseEstimator"))
    assert entries == {"type": "AuxTopdownPoseEstimator", "auxiliary_head": one}
    assert dict(aux_model_entries([one, one]))["auxiliary_head"] == [one, one]
    with pytest.raises(PlanError, match="need a TopdownPoseEstimator config"):
        aux_model_entries([one], base_type="BottomupPoseEstimator")


# -- a real training run ----------------------------------------------------------------------------


@pytest.mark.slow
def test_runner_trains_with_an_aux_head(wrapped: Wrapped, tmp_path: Path) -> None:
    from mmengine.runner import Runner

    from adaptkit.mm.openmmlab import quiet
    from adaptkit.mm.synthetic import smoke_config, write_keypoint_dataset

    data = tmp_path / "data"
    write_keypoint_dataset(data, num_images=4, num_keypoints=17)
    cfg = load_config(write_aux_fragment(wrapped, [aux_config(wrapped)], "aux_run.py"))
    cfg = smoke_config(cfg, data, tmp_path / "work", batch_size=2, epochs=1)
    with quiet():
        runner = Runner.from_cfg(cfg)
        runner.train()
    assert isinstance(runner.model, AuxTopdownPoseEstimator)
    hub = runner.message_hub
    aux_loss = hub.get_scalar("train/aux_loss_kpt").current()
    assert np.isfinite(aux_loss) and aux_loss > 0
    assert hub.get_scalar("train/loss").current() > aux_loss  # the total includes the main loss too
    saved = torch.load(tmp_path / "work" / "epoch_1.pth", map_location="cpu", weights_only=False)
    assert any(k.startswith("auxiliary_head.") for k in saved["state_dict"])
