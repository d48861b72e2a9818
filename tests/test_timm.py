"""``timm:NAME`` sources: features_only pyramids, no downloads, names checked against timm's list."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm", reason="timm is optional (requirements/optional.txt); timm:NAME needs it")

from adaptkit.core.probing import probe  # noqa: E402
from adaptkit.errors import SourceError  # noqa: E402
from adaptkit.mm.stock import HRNET  # noqa: E402
from adaptkit.sources import SourceKind, resolve_source, source_kind  # noqa: E402


def test_timm_sources_are_their_own_kind():
    assert source_kind("timm:resnet18") == SourceKind.TIMM
    assert source_kind("timm:create_model") == SourceKind.CALLABLE  # timm's own function stays reachable


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "mobilenetv3_small_050"])
def test_declared_feature_info_matches_the_probe_and_the_model_still_runs(name):
    model = resolve_source(f"timm:{name}")
    assert not any(p.is_meta for p in model.parameters())
    result = probe(model, (2, 3, 224, 224))
    declared = list(zip(model.feature_info.channels(), model.feature_info.reduction(), strict=True))
    measured = [(f.channels, f.stride[0]) for f in result.features]
    assert measured == declared
    modules = [f.module for f in result.features]
    assert all(modules)
    if name != "mobilenetv3_small_050":  # its hook-based wrapper declares bn1 where act1 returns the map
        # timm's FeatureListNet flattens module paths with "_" (stages.0 -> stages_0)
        assert modules == [n.replace(".", "_") for n in model.feature_info.module_name()]
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 224, 224))  # the probe left real weights behind
    assert [o.shape[1] for o in outputs] == model.feature_info.channels()


def test_arg_passes_through_and_pretrained_is_false():
    model = resolve_source("timm:resnet18", out_indices=(2, 3))
    assert model.feature_info.reduction() == [8, 16]
    created = resolve_source("timm:create_model", model_name="resnet18", features_only=True)
    assert created.feature_info.channels() == [64, 64, 128, 256, 512]


def test_unknown_name_gives_one_line_with_close_names(run_cli):
    code, out, err = run_cli("probe", "timm:resnet81")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "timm has no model 'resnet81'" in err and "'resnet18'" in err


def test_pretrained_without_a_local_file_is_refused():
    with pytest.raises(SourceError, match="would download weights; adaptkit never downloads"):
        resolve_source("timm:resnet18", pretrained=True)


def test_probe_cli_on_timm_resnet18(run_cli):
    code, out, err = run_cli("probe", "timm:resnet18", "--input", "2x3x224x224")
    assert code == 0, err
    assert "2x512x7x7" in out and "2x64x112x112" in out


def test_wrap_timm_convnext_into_the_hrnet_config_builds(run_cli, tmp_path):
    from adaptkit.mm.openmmlab import build_model, load_config

    fragment = tmp_path / "convnext.py"
    code, out, err = run_cli("wrap", "timm:convnext_atto", "--target", HRNET, "--out", str(fragment))
    assert code == 0, err
    assert "source='timm:convnext_atto'" in fragment.read_text()
    model = build_model(load_config(fragment).model)
    model.eval()
    with torch.no_grad():
        heatmaps = model(torch.randn(1, 3, 256, 192), None, mode="tensor")
    assert tuple(heatmaps.shape) == (1, 17, 64, 48)
