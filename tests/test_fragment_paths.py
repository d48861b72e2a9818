"""A fragment names a backbone file and checkpoint beside or below it relative to itself, so they travel together."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

from .test_cli_fuzz import TINY
from .test_files import STOCK


@pytest.mark.slow  # two wraps and a build (~13 s on 2 cores)
def test_files_beside_the_fragment_travel_with_it(tmp_path, monkeypatch, run_cli):
    project = tmp_path / "project"
    (project / "weights").mkdir(parents=True)
    (project / "net.py").write_text(TINY)
    sys.path.insert(0, str(project))
    try:
        from adaptkit.sources import resolve_source

        model = resolve_source(f"{project / 'net.py'}:Net")
    finally:
        sys.path.remove(str(project))
    torch.save(model.state_dict(), project / "weights" / "net.pth")
    elsewhere = tmp_path / "outside.pth"
    torch.save(model.state_dict(), elsewhere)

    code, out, err = run_cli(
        "wrap",
        f"{project / 'net.py'}:Net",
        "--target",
        STOCK,
        "--out",
        str(project / "frag.py"),
        "--checkpoint",
        str(project / "weights" / "net.pth"),
        "--input",
        "2x3x64x48",
        "--quiet",
    )
    assert code == 0, err
    text = (project / "frag.py").read_text()
    assert "source='{{fileDirname}}/net.py:Net'" in text
    assert "checkpoint='{{fileDirname}}/weights/net.pth'" in text

    code, out, err = run_cli(
        "wrap",
        f"{project / 'net.py'}:Net",
        "--target",
        STOCK,
        "--out",
        str(project / "frag2.py"),
        "--checkpoint",
        str(elsewhere),
        "--input",
        "2x3x64x48",
        "--quiet",
    )
    assert code == 0, err
    assert f"checkpoint={str(elsewhere.resolve())!r}" in (project / "frag2.py").read_text()  # outside: absolute

    moved = shutil.move(str(project), str(tmp_path / "moved"))
    monkeypatch.chdir(tmp_path)
    from adaptkit.mm.openmmlab import build_model, load_config

    cfg = load_config(f"{moved}/frag.py")
    assert cfg.model.backbone.source == f"{moved}/net.py:Net"
    backbone = build_model(cfg.model.backbone, keep_init_cfg=True)
    backbone.init_weights()  # loads the moved checkpoint through the fragment's own path
    assert torch.equal(backbone.body.a.weight, model.a.weight)
