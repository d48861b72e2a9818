"""``adaptkit smoke``: the synthetic task in each dataset type's layout, the Runner, the held-out metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adaptkit.mm.smoke import SmokeSettings, headline_metric, run_smoke
from adaptkit.mm.stock import HRNET
from adaptkit.mm.synthetic_data import AnnotationStyle, layout_for_dataset, write_split

from .conftest import shipped_fragment

WFLW = "mmpose::face_2d_keypoint/topdown_heatmap/wflw/td-hm_hrnetv2-w18_8xb64-60e_wflw-256x256.py"
WB_FACE = (
    "mmpose::face_2d_keypoint/topdown_heatmap/coco_wholebody_face/td-hm_res50_8xb32-60e_coco-wholebody-face-256x256.py"
)
HAND = (
    "mmpose::hand_2d_keypoint/topdown_heatmap/coco_wholebody_hand/td-hm_res50_8xb32-210e_coco-wholebody-hand-256x256.py"
)
ONEHAND = "mmpose::hand_2d_keypoint/topdown_heatmap/onehand10k/td-hm_res50_8xb32-210e_onehand10k-256x256.py"
MPII = "mmpose::body_2d_keypoint/topdown_heatmap/mpii/td-hm_res50_8xb64-210e_mpii-256x256.py"
TINY = SmokeSettings(iters=2, images=4, batch=2, val_images=2)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--iters", "0"], "--iters must be a positive whole number, got 0"),
        (["--batch", "-2"], "--batch must be a positive whole number, got -2"),
        (["--images", "-1"], "--images must be a positive whole number, got -1"),
        (["--val-images", "0"], "--val-images must be a positive whole number, got 0"),
    ],
)
def test_bad_sizes_exit_2_in_one_line_and_create_nothing(run_cli, tmp_path, argv, message):
    work = tmp_path / "work"
    code, out, err = run_cli("smoke", str(shipped_fragment("sctnet-s", HRNET)), "--work-dir", str(work), *argv)
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and message in err
    assert not work.exists()


def test_a_config_that_is_not_a_pose_config_is_refused(run_cli, tmp_path):
    config = tmp_path / "classifier.py"
    config.write_text("model = dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18))\n")
    work = tmp_path / "work"
    code, _, err = run_cli("smoke", str(config), "--work-dir", str(work))
    assert code == 2 and "is not a pose config" in err and err.count("\n") == 1
    assert not work.exists()


def test_a_missing_fragment_is_one_line(run_cli, tmp_path):
    code, _, err = run_cli("smoke", str(tmp_path / "nope.py"), "--work-dir", str(tmp_path / "w"))
    assert code == 2 and "does not exist" in err and not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "config, style, count",
    [
        (HRNET, AnnotationStyle.COCO, 17),
        (WFLW, AnnotationStyle.COCO, 98),
        (WB_FACE, AnnotationStyle.WHOLEBODY_FACE, 68),
        (HAND, AnnotationStyle.WHOLEBODY_HAND, 21),
        (MPII, AnnotationStyle.MPII, 16),
    ],
)
def test_each_dataset_type_reads_its_split(tmp_path, config, style, count):
    """The stock dataset class parses what the writer wrote, keypoints where they were drawn."""
    from mmengine.registry import init_default_scope
    from mmpose.registry import DATASETS

    from adaptkit.mm.openmmlab import ensure_mmpose, load_config

    ensure_mmpose()
    init_default_scope("mmpose")
    cfg = load_config(config)
    layout = layout_for_dataset(cfg.train_dataloader.dataset)
    assert layout.style is style and layout.num_keypoints == count
    files = write_split(tmp_path, "val", layout, num_images=3, seed=5)
    dataset_cfg = cfg.val_dataloader.dataset.to_dict()
    dataset_cfg.update(data_root=str(tmp_path), ann_file=files.ann_file, data_prefix=dict(img=files.img_prefix))
    dataset_cfg.pop("bbox_file", None)
    if files.headbox_file:
        dataset_cfg["headbox_file"] = str(tmp_path / files.headbox_file)
    dataset_cfg["pipeline"] = []
    dataset = DATASETS.build(dataset_cfg)
    assert len(dataset) == 3
    item = dataset[0]
    assert item["keypoints"].shape == (1, count, 2)
    x0, y0, x1, y1 = item["bbox"][0]
    inside = (item["keypoints"][0] >= (x0 - 1, y0 - 1)) & (item["keypoints"][0] <= (x1 + 1, y1 + 1))
    assert inside.all()  # the box holds the figure it annotates
    image = Path(item["img_path"])
    assert image.is_file()


def test_flip_pairs_share_a_colour_and_sit_mirrored(tmp_path):
    """A horizontal flip (the stock RandomFlip) must map a figure onto a valid figure."""
    from adaptkit.mm.openmmlab import ensure_mmpose
    from adaptkit.mm.synthetic_data import _palette, _template

    ensure_mmpose()
    layout = layout_for_dataset({"type": "CocoDataset"})
    colours, template = _palette(layout), _template(layout)
    for i, j in enumerate(layout.flip_indices):
        assert colours[i] == colours[j]
        assert template[i][0] == pytest.approx(-template[j][0]) and template[i][1] == pytest.approx(template[j][1])
    assert len(set(colours)) == 9  # nose, and eight left/right pairs


def test_headline_metric_picks_ap_then_pck_then_nme():
    assert headline_metric({"coco/AR": 0.2, "coco/AP": 0.5})[:2] == ("coco/AP", 0.5)
    assert headline_metric({"AUC": 0.3, "PCK": 0.9})[:2] == ("PCK", 0.9)
    assert headline_metric({"NME": 0.1}) == ("NME", 0.1, False)


@pytest.mark.slow
def test_smoke_json_and_a_checkpoint_init_model_loads(run_cli, tmp_path, monkeypatch):
    """--json reports ap, iters, seconds, checkpoint; init_model reads the checkpoint with torch's default load."""
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    fragment = shipped_fragment("sctnet-s", HRNET)
    work = tmp_path / "work"
    code, out, err = run_cli(
        "smoke", str(fragment), "--work-dir", str(work), "--iters", "2", "--images", "4", "--batch", "2",
        "--val-images", "2", "--json",
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    assert {"ap", "iters", "seconds", "checkpoint"} <= set(document)
    assert document["iters"] == 2 and document["metric"] == "coco/AP" and 0.0 <= document["ap"] <= 1.0
    checkpoint = Path(document["checkpoint"])
    assert checkpoint.is_file() and (work / "iter_2.pth").is_file()
    torch.load(checkpoint, map_location="cpu", weights_only=True)  # what init_model does under torch >= 2.6

    from mmpose.apis import inference_topdown, init_model

    model = init_model(str(fragment), str(checkpoint), device="cpu")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.state_dict()["neck.proj.weight"], saved["neck.proj.weight"])
    image = next((work / "data" / "val").glob("*.jpg"))
    assert inference_topdown(model, str(image))[0].pred_instances.keypoints.shape == (1, 17, 2)


@pytest.mark.slow
@pytest.mark.parametrize("config, metric", [(WFLW, "NME"), (WB_FACE, "NME"), (HAND, "PCK"), (MPII, "PCK")])
def test_face_hand_and_mpii_configs_smoke_train(tmp_path, config, metric):
    result = run_smoke(config, tmp_path, TINY)
    assert result.metric.endswith(metric) and result.iters == 2
    assert torch.isfinite(torch.tensor(result.value))
    assert result.checkpoint.is_file()
