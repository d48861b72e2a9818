"""adaptkit port on hostile folders: bounded reads, no blocking, no following links out, relative imports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adaptkit.errors import PortError
from adaptkit.tools.porting import rewrite, scan

OLD = "from mmcv.runner import BaseModule\n"


def test_a_fifo_named_x_py_never_blocks(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.py")
    (tmp_path / "a.py").write_text(OLD)
    report = scan(tmp_path)  # returns: the FIFO is skipped, never opened for reading
    assert [f.name for f in report.files] == ["a.py"]
    with pytest.raises(PortError, match="not a regular file"):
        scan(tmp_path / "x.py")


def test_a_symlink_to_dev_zero_is_skipped_and_refused(tmp_path: Path) -> None:
    (tmp_path / "zero.py").symlink_to("/dev/zero")
    assert scan(tmp_path).files == ()
    with pytest.raises(PortError, match="not a regular file"):
        scan(tmp_path / "zero.py")


def test_a_huge_file_is_one_line(tmp_path: Path) -> None:
    big = tmp_path / "big.py"
    big.write_bytes(b"x = 1\n" * (1 << 20))
    with pytest.raises(PortError, match="larger than 4 MB"):
        scan(big)


def test_a_pathologically_nested_file_is_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.py"
    deep.write_text("x = " + "(" * 200_000 + ")" * 200_000 + "\n")
    with pytest.raises(PortError, match="too deeply|does not parse") as info:
        scan(deep)
    assert "\n" not in str(info.value)
    report = scan(tmp_path)  # in a folder: reported as a broken file, the scan goes on
    assert len(report.findings) == 1 and "cannot parse" in report.findings[0].note


def test_write_never_follows_a_symlink_out_of_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text(OLD)
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "link.py").symlink_to(outside)
    (folder / "own.py").write_text(OLD)
    report = rewrite(folder)
    assert [r.file.name for r in report.rewritten] == ["own.py"]
    assert outside.read_text() == OLD and not (tmp_path / "outside.py.orig").exists()


def test_rewrite_keeps_the_file_mode(tmp_path: Path) -> None:
    file = tmp_path / "a.py"
    file.write_text(OLD)
    file.chmod(0o640)
    rewrite(tmp_path)
    assert file.stat().st_mode & 0o777 == 0o640 and "mmengine" in file.read_text()


def test_relative_imports_are_reported_for_a_hand_fix(tmp_path: Path) -> None:
    """The original SCTNet file: two relative imports make it unimportable outside mmseg."""
    code = "from ..builder import BACKBONES\nfrom .decode_head import BaseDecodeHead\n" + OLD
    loose = tmp_path / "sctnet.py"
    loose.write_text(code)
    report = scan(loose)
    relative = [f for f in report.findings if f.old.startswith(".")]
    assert [f.old for f in relative] == ["..builder.BACKBONES", ".decode_head.BaseDecodeHead"]
    assert all(not f.auto_fixable and "relative import" in f.note for f in relative)

    placed = tmp_path / "mmseg" / "models" / "backbones"
    placed.mkdir(parents=True)
    (placed / "sctnet.py").write_text(code)
    found = {f.old: f for f in scan(placed / "sctnet.py").findings}
    assert found["..builder.BACKBONES"].new == "mmpose.registry.MODELS"
    assert "mmseg.models.builder.BACKBONES" in found["..builder.BACKBONES"].note
    assert found[".decode_head.BaseDecodeHead"].new == "mmseg.models.backbones.decode_head.BaseDecodeHead"


def test_cli_port_on_relative_imports_does_not_say_nothing_is_left(tmp_path: Path, run_cli) -> None:
    file = tmp_path / "sctnet.py"
    file.write_text("from ..builder import BACKBONES\n")
    code, out, err = run_cli("port", str(file))
    assert "nothing from mmcv 1.x" not in out and "by hand" in out
