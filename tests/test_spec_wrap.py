"""`adaptkit wrap SOURCE --target CHANNELS@STRIDE`: a model fragment with no _base_, used from a real config.

The fragment is loaded by mmengine's own ``Config.fromfile`` and combined with
stock mmpose configs the way its header tells a user to; the result is built by
mmpose's registry and run forward.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaptkit.core.emitting import MODEL_FRAGMENT_KEY
from adaptkit.errors import OptionError, TargetError
from adaptkit.mm.fragments import wrap_config

from .conftest import HRNET

FACE = "mmpose::face_2d_keypoint/topdown_heatmap/coco_wholebody_face/td-hm_hrnetv2-w18_8xb32-60e_coco-wholebody-face-256x256.py"


def _one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _build_from(config: Path, model_line: str, stock: str) -> torch.nn.Module:
    """A user's config: the stock config and the fragment in _base_, ``model`` taken from the fragment."""
    from mmengine import Config
    from mmengine.utils import import_modules_from_strings
    from mmpose.registry import MODELS
    from mmpose.utils import register_all_modules

    config.write_text(f"_base_ = [{stock!r}, 'fragment.py']\n{model_line}\n")
    cfg = Config.fromfile(str(config))
    import_modules_from_strings(**cfg.custom_imports)  # what mmengine's Runner does with custom_imports
    register_all_modules()
    model = MODELS.build(cfg.model)
    model.eval()
    return model


def _heatmaps(model: torch.nn.Module, height: int, width: int) -> torch.Size:
    with torch.no_grad():
        return model(torch.randn(2, 3, height, width), None, mode="tensor").shape


def test_spec_fragment_has_no_base_and_serves_the_stock_hrnet_head(tmp_path, run_cli):
    from mmengine import Config

    fragment = tmp_path / "fragment.py"
    code, out, err = run_cli("wrap", "sctnet-s", "--target", "32@4", "--out", str(fragment))
    assert code == 0, err
    assert f"model = _base_.{MODEL_FRAGMENT_KEY}" in out and "wrote" in out
    text = fragment.read_text()
    assert "_base_ =" not in text.split("\n\n", 1)[1]  # only the header's usage lines mention _base_
    assert "reads 32@4 (channels@stride), planned at input 2x3x640x640" in text  # plan's default probe shape
    assert "#   _base_ = ['your_config.py', 'fragment.py']" in text
    loaded = Config.fromfile(str(fragment))
    assert "model" not in loaded and "_base_" not in loaded
    assert loaded.custom_imports.imports == ["adaptkit.mmpose_plugin"]
    assert loaded[MODEL_FRAGMENT_KEY].backbone.type == "ForeignBackbone"
    assert loaded[MODEL_FRAGMENT_KEY].neck.out_channels == 32
    assert loaded[MODEL_FRAGMENT_KEY].neck.target_stride == [4, 4]

    model = _build_from(tmp_path / "mine.py", f"model = _base_.{MODEL_FRAGMENT_KEY}", HRNET)
    assert type(model.backbone).__name__ == "ForeignBackbone"
    assert type(model.head).__name__ == "HeatmapHead" and model.head.in_channels == 32
    assert _heatmaps(model, 256, 192) == (2, 17, 64, 48)  # the codec's 48x64 heatmaps, 17 COCO keypoints


def test_the_headers_neck_line_replaces_a_stock_neck(tmp_path, run_cli):
    """HRNetV2's face config concatenates branches in a FeatureMapProcessor neck; the header says how to replace it."""
    fragment = tmp_path / "fragment.py"
    code, _, err = run_cli("wrap", "sctnet-s", "--target", "270@4", "--out", str(fragment), "--input", "2x3x256x256")
    assert code == 0, err
    line = next(ln for ln in fragment.read_text().splitlines() if "has a neck" in ln)
    model_line = line.split("replace it: ", 1)[1]
    model = _build_from(tmp_path / "mine.py", model_line, FACE)
    assert type(model.neck).__name__ == "ShapeAdapter"
    assert _heatmaps(model, 256, 256) == (2, 68, 64, 64)


def test_timm_convnext_atto_to_32_at_4(tmp_path, run_cli):
    pytest.importorskip("timm", reason="timm is optional (requirements/optional.txt); timm:NAME needs it")
    fragment = tmp_path / "fragment.py"
    code, out, err = run_cli("wrap", "timm:convnext_atto", "--target", "32@4", "--out", str(fragment))
    assert code == 0, err
    assert "source='timm:convnext_atto'" in fragment.read_text()
    model = _build_from(tmp_path / "mine.py", f"model = _base_.{MODEL_FRAGMENT_KEY}", HRNET)
    assert _heatmaps(model, 256, 192) == (2, 17, 64, 48)


def test_python_wrap_config_takes_a_spec(tmp_path):
    fragment = tmp_path / "f.py"
    result = wrap_config("sctnet-s", "32@4,64@8", fragment, input_shape="2x3x256x192", select=None)
    assert fragment.read_text() == result.text
    assert [p.out_channels for p in result.plan.inputs] == [32, 64]
    assert "type='MultiShapeAdapter'" in result.text
    assert "reads 32@4,64@8 (channels@stride), planned at input 2x3x256x192" in result.text


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--aux", "1:0.4"], "--aux needs a config --target"),
        (["--strategy", "adapt-head"], "--strategy adapt-head needs a config --target"),
        (["--distill", HRNET, "--distill-checkpoint", "t.pth"], "--distill needs a config --target"),
        (["--aux", "1", "--strategy", "adapt-head"], "--aux and --strategy adapt-head need a config --target"),
    ],
)
def test_options_that_need_a_config_are_refused_before_any_work(extra, expected, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _one_error_line(*run_cli("wrap", "sctnet-s", "--target", "32@4", "--out", "f.py", *extra))
    assert expected in line and "'32@4' is a bare CHANNELS@STRIDE spec" in line
    assert list(tmp_path.iterdir()) == []  # nothing written (t.pth is never read: refused first)


@pytest.mark.parametrize(
    "target, expected",
    [
        ("thirty-two", "--target must be a config (file or mmpose::name) or CHANNELS@STRIDE (e.g. 32@4)"),
        ("32@0", "stride"),
        ("0@4", "channels"),
    ],
)
def test_bad_spec_targets_are_one_line(target, expected, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _one_error_line(*run_cli("wrap", "sctnet-s", "--target", target, "--out", "f.py"))
    assert expected in line
    assert list(tmp_path.iterdir()) == []


def test_python_refusals_are_typed(tmp_path):
    with pytest.raises(OptionError, match="--aux needs a config --target"):
        wrap_config("sctnet-s", "32@4", tmp_path / "f.py", aux=["1"])
    with pytest.raises(TargetError, match="got 'nope'"):
        wrap_config("sctnet-s", "nope", tmp_path / "f.py")
    with pytest.raises(TargetError, match="CHANNELS@STRIDE text, got int"):
        wrap_config("sctnet-s", 32, tmp_path / "f.py")
    assert list(tmp_path.iterdir()) == []


def test_request_reads_a_path_config_and_a_spec_apart(tmp_path):
    from adaptkit.mm.fragments import wrap_request
    from adaptkit.mm.openmmlab import config_path

    stock = wrap_request("sctnet-s", config_path(HRNET), tmp_path / "f.py")
    assert stock.spec is None and stock.config == str(config_path(HRNET)) and stock.input_shape is None
    spec = wrap_request("sctnet-s", " 32@4x8 ", tmp_path / "f.py")
    assert spec.spec is not None and spec.spec.stride == (4, 8) and spec.input_shape == (2, 3, 640, 640)


def test_a_backbone_file_and_checkpoint_travel_with_the_model_fragment(tmp_path, run_cli):
    """mmengine fills {{fileDirname}} per file, so a model fragment used as a _base_ finds its own neighbours."""
    from mmengine import Config

    from adaptkit.mm.openmmlab import build_model
    from adaptkit.sources import resolve_source

    from .test_cli_fuzz import TINY

    project, mine = tmp_path / "project", tmp_path / "configs"
    project.mkdir()
    mine.mkdir()
    (project / "net.py").write_text(TINY)
    net = resolve_source(f"{project / 'net.py'}:Net")
    torch.nn.init.constant_(net.a.weight, 0.25)
    torch.save(net.state_dict(), project / "net.pth")
    code, _, err = run_cli(
        "wrap",
        f"{project / 'net.py'}:Net",
        "--target",
        "32@4",
        "--out",
        str(project / "fragment.py"),
        "--checkpoint",
        str(project / "net.pth"),
        "--input",
        "2x3x64x48",
        "--quiet",
    )
    assert code == 0, err
    text = (project / "fragment.py").read_text()
    assert "source='{{fileDirname}}/net.py:Net'" in text and "checkpoint='{{fileDirname}}/net.pth'" in text

    user = mine / "mine.py"
    user.write_text(f"_base_ = [{HRNET!r}, '../project/fragment.py']\nmodel = _base_.{MODEL_FRAGMENT_KEY}\n")
    cfg = Config.fromfile(str(user))
    assert cfg.model.backbone.source == f"{project}/net.py:Net"
    backbone = build_model(cfg.model.backbone, keep_init_cfg=True)
    backbone.init_weights()  # the checkpoint named beside the fragment, found from another folder
    assert torch.equal(backbone.body.a.weight, net.a.weight)
    model = build_model(cfg.model)
    model.eval()
    assert _heatmaps(model, 256, 192) == (2, 17, 64, 48)
