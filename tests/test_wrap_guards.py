"""wrap refuses bad files before it probes: checkpoints, teacher checkpoints, --out over its own inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .test_files import STOCK


def one_line(code: int, out: str, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


def test_a_checkpoint_folder_is_called_a_folder(tmp_path, run_cli):
    line = one_line(
        *run_cli("wrap", "sctnet-s", "--target", STOCK, "--out", str(tmp_path / "f.py"), "--checkpoint", str(tmp_path))
    )
    assert "not a file but a folder" in line
    assert not (tmp_path / "f.py").exists()


def test_a_truncated_teacher_checkpoint_fails_before_writing(tmp_path, run_cli):
    good = tmp_path / "teacher.pth"
    torch.save({"w": torch.zeros(1000)}, good)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[:300])
    out = tmp_path / "f.py"
    line = one_line(
        *run_cli(
            "wrap",
            "sctnet-s",
            "--target",
            STOCK,
            "--out",
            str(out),
            "--distill",
            STOCK,
            "--distill-checkpoint",
            str(bad),
        )
    )
    assert "truncated.pth" in line and "corrupt" in line
    assert not out.exists()


def test_distill_from_without_distill_is_an_option_error(tmp_path, run_cli):
    line = one_line(
        *run_cli("wrap", "sctnet-s", "--target", STOCK, "--out", str(tmp_path / "f.py"), "--distill-from", "9")
    )
    assert "--distill TEACHER_CONFIG and --distill-checkpoint FILE go together" in line


@pytest.mark.parametrize("which", ["target", "source"])
def test_out_may_not_be_its_own_target_or_source(tmp_path, run_cli, which):
    config = tmp_path / "T.py"
    config.write_text("_base_ = []\n")
    net = tmp_path / "net.py"
    net.write_text("import torch.nn as nn\nNet = nn.Identity\n")
    before = {p: p.read_text() for p in (config, net)}
    out = config if which == "target" else net
    line = one_line(*run_cli("wrap", f"{net}:Net", "--target", str(config), "--out", str(out), "--force"))
    assert f"is the {'--target' if which == 'target' else 'SOURCE'} file itself" in line
    assert {p: p.read_text() for p in (config, net)} == before


@pytest.mark.slow  # probes SCTNet-S and builds the teacher config (~30 s on 2 cores)
def test_distill_from_a_missing_path_names_distill_from(tmp_path, run_cli):
    teacher = tmp_path / "teacher.pth"
    torch.save({"w": torch.zeros(3)}, teacher)
    line = one_line(
        *run_cli(
            "wrap",
            "sctnet-s",
            "--target",
            STOCK,
            "--out",
            str(tmp_path / "f.py"),
            "--distill",
            STOCK,
            "--distill-checkpoint",
            str(teacher),
            "--distill-from",
            "9",
        )
    )
    assert line.startswith("adaptkit wrap: error: --distill-from") and "--aux" not in line
    assert not Path(tmp_path / "f.py").exists()
