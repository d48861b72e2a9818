"""Feature distillation: ChannelWiseDistillLoss by hand, and a DistillHead with a frozen teacher that trains."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adaptkit.core.probing import probe
from adaptkit.errors import BuildError, CheckpointError, ConfigError, PlanError
from adaptkit.mm.aux_plans import distill_head_config, plan_distill, teacher_target
from adaptkit.mm.distill import ChannelWiseDistillLoss, DistillHead, build_teacher
from adaptkit.mm.estimator import AuxTopdownPoseEstimator
from adaptkit.mm.openmmlab import build_model, load_config
from adaptkit.sources import resolve_source

INPUT = (2, 3, 128, 128)
WEIGHT = 2.0

# -- the loss ---------------------------------------------------------------------------------------


def hand_cwd(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> float:
    """The loss written out with Python floats, position by position."""
    n, c = student.shape[:2]
    total = 0.0
    for i in range(n):
        for j in range(c):
            s = [v / tau for v in student[i, j].flatten().tolist()]
            t = [v / tau for v in teacher[i, j].flatten().tolist()]
            zs, zt = sum(math.exp(v) for v in s), sum(math.exp(v) for v in t)
            for sv, tv in zip(s, t, strict=True):
                p_t, p_s = math.exp(tv) / zt, math.exp(sv) / zs
                total += p_t * (math.log(p_t) - math.log(p_s))
    return total * tau**2 / (n * c)


@pytest.mark.parametrize("tau", [4.0, 1.0, 0.5])
def test_loss_equals_hand_computation(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    student, teacher = (
        torch.randn(2, 3, 3, 2, generator=g, dtype=torch.float64),
        torch.randn(2, 3, 3, 2, generator=g, dtype=torch.float64),
    )
    loss = ChannelWiseDistillLoss(tau=tau)(student, teacher)
    assert loss.item() == pytest.approx(hand_cwd(student, teacher, tau), rel=1e-12)


def test_default_tau_is_four() -> None:
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(1, 2, 4, 4, generator=g), torch.randn(1, 2, 4, 4, generator=g)
    assert ChannelWiseDistillLoss()(student, teacher).item() == pytest.approx(hand_cwd(student, teacher, 4.0), rel=1e-5)


def test_loss_is_zero_for_identical_maps_and_positive_otherwise() -> None:
    x = torch.randn(2, 4, 5, 6)
    loss = ChannelWiseDistillLoss()
    assert loss(x, x.clone()).item() == 0.0
    assert loss(x, torch.randn(2, 4, 5, 6)).item() > 0
    assert loss(x, x * 2).item() > 0


def test_loss_compares_each_channel_over_positions() -> None:
    """A per-channel constant added to the teacher changes nothing (softmax over H*W, not over channels)."""
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    shift = torch.randn(2, 3, 1, 1, generator=g) * 10
    loss = ChannelWiseDistillLoss()
    assert torch.allclose(loss(student, teacher + shift), loss(student, teacher), atol=1e-6)
    swapped = teacher[:, [1, 0, 2]]  # but which channel is which matters
    assert not torch.allclose(loss(student, swapped), loss(student, teacher))


def test_gradients_flow_to_the_student_only() -> None:
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, requires_grad=True)
    ChannelWiseDistillLoss()(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_loss_rejects_bad_input() -> None:
    loss = ChannelWiseDistillLoss()
    with pytest.raises(BuildError, match=r"one \(N, C, H, W\) shape, got \[2, 3, 4, 4\] and \[2, 5, 4, 4\]"):
        loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 4, 4))
    with pytest.raises(BuildError, match="one \\(N, C, H, W\\) shape"):
        loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    with pytest.raises(BuildError, match="tau must be a positive number"):
        ChannelWiseDistillLoss(tau=0)


# -- the head with a teacher ------------------------------------------------------------------------

TEACHER_CONFIG = """\
model = dict(
    type='TopdownPoseEstimator',
    backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8, out_indices=(1,)),
    head=dict(type='HeatmapHead', in_channels=16, out_channels=17, deconv_out_channels=None),
)
"""


def teacher_state(teacher: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in teacher.state_dict().items()}


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """A tiny teacher config and the whole saved estimator as its checkpoint (head keys included)."""
    folder = tmp_path_factory.mktemp("teacher")
    config = folder / "teacher.py"
    config.write_text(TEACHER_CONFIG)
    torch.manual_seed(7)
    estimator = build_model(load_config(config).model)
    for p in estimator.parameters():  # far from any default init, so a missed load shows
        torch.nn.init.normal_(p, std=0.5)
    checkpoint = folder / "teacher.pth"
    torch.save({"state_dict": estimator.state_dict(), "meta": {"epoch": 3}}, checkpoint)
    return config, checkpoint, estimator.state_dict()


@pytest.fixture(scope="module")
def distill_cfg(teacher_files: tuple[Path, Path, dict[str, torch.Tensor]]) -> dict[str, Any]:
    config, checkpoint, _ = teacher_files
    teacher, path = teacher_target(str(config), INPUT)
    assert (teacher.channels, teacher.stride, path) == (16, (8, 8), "0")
    student = probe(resolve_source("sctnet-s"), INPUT)
    adapter_plan = plan_distill(student, teacher, "0")  # x_out: 128 ch at stride 8 -> 16 ch
    return distill_head_config(adapter_plan, str(config), str(checkpoint), WEIGHT, teacher_select=path)


def build_student(aux: dict[str, Any]) -> AuxTopdownPoseEstimator:
    """SCTNet-S with a small heatmap head and the distillation head, at 128x128."""
    torch.manual_seed(0)
    model = build_model(
        dict(
            type="AuxTopdownPoseEstimator",
            backbone=dict(type="ForeignBackbone", source="sctnet-s"),
            neck=dict(
                type="ShapeAdapter",
                select="0",
                in_channels=128,
                out_channels=32,
                feature_stride=[8, 8],
                target_stride=[4, 4],
            ),
            head=dict(
                type="HeatmapHead",
                in_channels=32,
                out_channels=17,
                deconv_out_channels=None,
                loss=dict(type="KeypointMSELoss", use_target_weight=True),
            ),
            auxiliary_head=aux,
            data_preprocessor=dict(
                type="PoseDataPreprocessor",
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True,
            ),
        )
    )
    model.init_weights()
    return model


def make_data(seed: int = 0) -> dict[str, Any]:
    """A data batch as the dataloader hands it to train_step: uint8 images and samples with targets."""
    from mmengine.structures import InstanceData, PixelData
    from mmpose.structures import PoseDataSample

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(INPUT[0]):
        sample = PoseDataSample(metainfo=dict(input_size=(128, 128)))
        sample.gt_fields = PixelData(heatmaps=torch.from_numpy(rng.uniform(0, 1, (17, 32, 32)).astype(np.float32)))
        sample.gt_instance_labels = InstanceData(keypoint_weights=torch.ones(1, 17))
        samples.append(sample)
    images = [torch.from_numpy(rng.integers(0, 255, (3, 128, 128), dtype=np.uint8)) for _ in range(INPUT[0])]
    return dict(inputs=images, data_samples=samples)


def test_config_names_the_teacher_and_the_planned_adapter(distill_cfg: dict[str, Any], teacher_files: Any) -> None:
    config, checkpoint, _ = teacher_files
    assert distill_cfg["type"] == "DistillHead" and distill_cfg["loss_weight"] == WEIGHT
    assert distill_cfg["teacher_config"] == str(config.resolve())
    assert distill_cfg["teacher_checkpoint"] == str(checkpoint.resolve())
    adapter = distill_cfg["adapter"]
    assert (adapter["select"], adapter["in_channels"], adapter["out_channels"]) == ("0", 128, 16)
    assert distill_cfg["loss"] == dict(type="ChannelWiseDistillLoss", tau=4.0)


def test_teacher_is_loaded_frozen_and_hidden(distill_cfg: dict[str, Any], teacher_files: Any) -> None:
    from mmengine.optim import build_optim_wrapper

    _, _, saved = teacher_files
    model = build_student(distill_cfg)
    head = model.auxiliary_head
    assert isinstance(head, DistillHead)
    teacher = head.teacher
    for key, value in teacher.state_dict().items():  # the checkpoint's weights, not a fresh init
        assert torch.equal(value, saved[key]), key
    assert not any(p.requires_grad for p in teacher.parameters())
    model.train()
    assert not teacher.training  # train() does not reach it
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert teacher_ids and not teacher_ids & {id(p) for p in model.parameters()}
    assert not any("teacher" in k for k in model.state_dict())  # checkpoints stay the student's
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4)))
    in_optimizer = {id(p) for group in wrapper.optimizer.param_groups for p in group["params"]}
    assert not teacher_ids & in_optimizer


def test_train_step_updates_the_student_and_not_the_teacher(distill_cfg: dict[str, Any]) -> None:
    from mmengine.optim import build_optim_wrapper

    model = build_student(distill_cfg)
    teacher = model.auxiliary_head.teacher
    before = teacher_state(teacher)
    proj_before = model.auxiliary_head.adapter.proj.weight.detach().clone()
    layer_before = model.backbone.body.layer1[0].conv1.weight.detach().clone()
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4)))
    model.train()
    log = model.train_step(make_data(), wrapper)
    assert {"loss", "loss_kpt", "aux_loss_distill"} <= set(log)
    assert log["aux_loss_distill"] > 0
    after = teacher_state(teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert not torch.equal(model.auxiliary_head.adapter.proj.weight, proj_before)
    assert not torch.equal(model.backbone.body.layer1[0].conv1.weight, layer_before)


def test_distill_loss_is_the_weighted_alignment(distill_cfg: dict[str, Any]) -> None:
    model = build_student(distill_cfg)
    model.eval()
    data = model.data_preprocessor(make_data(seed=1), training=True)
    inputs, samples = data["inputs"], data["data_samples"]
    head = model.auxiliary_head
    with torch.no_grad():
        losses = model.loss(inputs, samples)
        student = head.adapt(model.backbone(inputs))[0]
        teacher = head.teacher(inputs)[0]  # ResNet returns a tuple of its out_indices maps
    assert student.shape == teacher.shape == (2, 16, 16, 16)
    expected = WEIGHT * ChannelWiseDistillLoss(4.0)(student, teacher)
    assert torch.allclose(losses["aux_loss_distill"], expected, rtol=1e-6)


def test_distill_head_refuses_what_it_cannot_do(
    distill_cfg: dict[str, Any], teacher_files: Any, tmp_path: Path
) -> None:
    config, _, _ = teacher_files
    model = build_student(distill_cfg)
    head = model.auxiliary_head
    with pytest.raises(ConfigError, match="auxiliary heads only train"):
        head.predict((torch.zeros(1, 16, 4, 4),), None)
    with pytest.raises(BuildError, match="needs the input images"):
        head.aux_loss(model.backbone(torch.zeros(*INPUT)), [], inputs=None)
    with pytest.raises(BuildError, match="compares \\(student, teacher\\) maps"):
        head.loss((torch.zeros(1, 16, 4, 4),))
    lost = dict(distill_cfg, teacher_select="3")
    with pytest.raises(BuildError, match="teacher returns: 0"):
        build_student(lost).auxiliary_head.teacher_feature(torch.zeros(*INPUT))
    with pytest.raises(CheckpointError, match="does not exist"):
        DistillHead(teacher_config=str(config), teacher_checkpoint=str(tmp_path / "missing.pth"))


def test_teacher_checkpoint_must_fit(teacher_files: Any, tmp_path: Path) -> None:
    config, checkpoint, saved = teacher_files
    partial = {k: v for k, v in saved.items() if not k.startswith("backbone.layer2.")}
    path = tmp_path / "partial.pth"
    torch.save({"state_dict": partial}, path)
    with pytest.raises(CheckpointError, match="missing"):
        build_teacher(str(config), path)
    no_model = tmp_path / "empty.py"
    no_model.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="has no model.backbone"):
        build_teacher(str(no_model), checkpoint)


def test_planning_helpers_check_their_input(teacher_files: Any, distill_cfg: dict[str, Any], tmp_path: Path) -> None:
    config, checkpoint, _ = teacher_files
    teacher, _ = teacher_target(str(config), INPUT)
    student = probe(resolve_source("sctnet-s"), INPUT)
    with pytest.raises(PlanError, match="no feature at path '5'"):
        plan_distill(student, teacher, "5")
    with pytest.raises(PlanError, match="teacher: no feature at path '4'"):
        teacher_target(str(config), INPUT, select="4")
    adapter_plan = plan_distill(student, teacher, "2.1.2")  # x3: 256 ch at stride 16 -> 16 ch at stride 8
    assert adapter_plan.out_channels == 16 and adapter_plan.steps[-1].out_shape[-2:] == (16, 16)
    with pytest.raises(PlanError, match="does not exist"):
        distill_head_config(adapter_plan, str(config), str(tmp_path / "nope.pth"), 1.0)
    with pytest.raises(PlanError, match="weight must be a positive number"):
        distill_head_config(adapter_plan, str(config), str(checkpoint), 0)
    assert distill_head_config(adapter_plan, str(config), str(checkpoint), 1.0, index=1)["name"] == "aux1"
