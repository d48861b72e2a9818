"""adaptkit port (alias: doctor --port): find mmcv 1.x / mmseg 0.x APIs in foreign code, rewrite the imports."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

from adaptkit.cli import main
from adaptkit.errors import PortError
from adaptkit.tools.porting import PORT_RULES, lookup, rewrite, scan

# A backbone module the way mmseg 0.x repositories wrote them (line numbers matter below).
OLD_BACKBONE = '''\
# Copyright (c) a paper's authors. A backbone written for mmseg 0.x.
import math
import warnings

import mmcv
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_conv_layer, build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmcv.cnn.utils.weight_init import constant_init, kaiming_init, trunc_normal_init
from mmcv.runner import BaseModule, load_checkpoint, auto_fp16  # runner helpers
from mmcv.utils import to_2tuple
from mmseg.models.builder import BACKBONES
from mmseg.ops import resize
from mmseg.utils import get_root_logger


@BACKBONES.register_module()
class PaperNet(BaseModule):
    """Two conv stages and a feature-fusion step."""

    def __init__(self, in_channels=3, width=32, pretrained=None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.pretrained = pretrained
        self.patch = to_2tuple(4)
        self.stem = ConvModule(in_channels, width, 3, stride=2, padding=1, norm_cfg=dict(type="BN"))
        self.down = ConvModule(width, width * 2, 3, stride=2, padding=1, norm_cfg=dict(type="BN"))

    def init_weights(self):
        if isinstance(self.pretrained, str):
            rank, _ = mmcv.runner.get_dist_info()
            logger = get_root_logger()
            load_checkpoint(self, self.pretrained, strict=False, logger=logger)
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_init(m, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                constant_init(m, 1)
            elif isinstance(m, nn.Linear):
                trunc_normal_init(m, std=0.02)

    @auto_fp16()
    def forward(self, x):
        x1 = self.stem(x)
        x2 = self.down(x1)
        return [x1, x2 + resize(x2, size=x2.shape[2:], mode="bilinear", align_corners=False)]
'''

EXPECTED = {
    (10, "mmcv.cnn.utils.weight_init.constant_init"): ("mmengine.model.constant_init", True),
    (10, "mmcv.cnn.utils.weight_init.kaiming_init"): ("mmengine.model.kaiming_init", True),
    (10, "mmcv.cnn.utils.weight_init.trunc_normal_init"): ("mmengine.model.trunc_normal_init", True),
    (11, "mmcv.runner.BaseModule"): ("mmengine.model.BaseModule", True),
    (11, "mmcv.runner.load_checkpoint"): ("mmengine.runner.load_checkpoint", True),
    (11, "mmcv.runner.auto_fp16"): ("", False),
    (12, "mmcv.utils.to_2tuple"): ("mmengine.utils.to_2tuple", True),
    (13, "mmseg.models.builder.BACKBONES"): ("mmpose.registry.MODELS", True),
    (14, "mmseg.ops.resize"): ("mmpose.models.utils.ops.resize", True),
    (15, "mmseg.utils.get_root_logger"): ("mmengine.logging.MMLogger", False),
    (31, "mmcv.runner.get_dist_info"): ("mmengine.dist.get_dist_info", False),
}


@pytest.fixture()
def backbone(tmp_path: Path) -> Path:
    file = tmp_path / "papernet.py"
    file.write_text(OLD_BACKBONE, encoding="utf-8")
    return file


def table(report) -> dict[tuple[int, str], tuple[str, bool]]:
    return {(f.line, f.old): (f.new, f.auto_fixable) for f in report.findings}


# ----------------------------------------------------------------------------- scan


def test_scan_finds_every_old_api_with_its_line_and_replacement(backbone: Path) -> None:
    report = scan(backbone)
    assert table(report) == EXPECTED
    assert report.files == (backbone,)
    assert report.rewritten == ()
    assert report.fixable == 8
    assert all(f.file == backbone for f in report.findings)
    use = next(f for f in report.findings if f.old == "mmcv.runner.get_dist_info")
    assert use.col == OLD_BACKBONE.splitlines()[30].index("mmcv.runner")
    # still in mmcv 2.x: not findings
    flagged = {f.old for f in report.findings}
    assert not any(name in old for old in flagged for name in ("ConvModule", "build_norm_layer", "FFN"))


def test_scan_follows_import_aliases_and_reports_each_use_once(tmp_path: Path) -> None:
    file = tmp_path / "uses.py"
    file.write_text(
        "import mmcv.runner as runner\n"
        "from mmcv import Config, imread\n"
        "from mmcv.runner import BaseModule\n"
        "ckpt = runner.load_checkpoint\n"
        "cfg = Config.fromfile('x.py')\n"
        "BaseModule.init_weights\n"
        "import mmcv\n"
        "mmcv.parallel.MMDataParallel\n"
        "mmcv.imread\n",
        encoding="utf-8",
    )
    found = table(scan(file))
    assert found == {
        (1, "mmcv.runner"): ("mmengine.runner", False),
        (2, "mmcv.Config"): ("mmengine.config.Config", True),
        (3, "mmcv.runner.BaseModule"): ("mmengine.model.BaseModule", True),
        (4, "mmcv.runner.load_checkpoint"): ("mmengine.runner.load_checkpoint", False),
        (8, "mmcv.parallel.MMDataParallel"): ("", False),
    }


def test_star_imports_from_a_removed_module_are_flagged(tmp_path: Path) -> None:
    file = tmp_path / "star.py"
    file.write_text("from mmcv.runner import *\nfrom mmcv.cnn import *\n", encoding="utf-8")
    (finding,) = scan(file).findings
    assert (finding.line, finding.old, finding.auto_fixable) == (1, "mmcv.runner.*", False)
    assert "one by one" in finding.note


def test_lookup_prefers_the_longest_rule() -> None:
    assert lookup("mmcv.runner.load_checkpoint")[1:] == (
        "mmcv.runner.load_checkpoint",
        "mmengine.runner.load_checkpoint",
    )
    assert lookup("mmcv.runner.some_helper")[1:] == ("mmcv.runner.some_helper", "mmengine.runner")
    assert lookup("mmcv.fileio.io.load")[1:] == ("mmcv.fileio.io", "mmengine.fileio.io")
    assert lookup("mmcv.cnn.ConvModule") is None
    assert lookup("mmcv.utils.collect_env") is None


def test_folder_scan_recurses_skips_caches_and_reports_broken_files(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "pkg" / "sub" / "a.py").write_text("from mmcv.runner import get_dist_info\n", encoding="utf-8")
    (tmp_path / "pkg" / "__pycache__" / "b.py").write_text("from mmcv.runner import BaseModule\n", encoding="utf-8")
    (tmp_path / ".hidden" / "c.py").write_text("from mmcv.runner import BaseModule\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("from mmcv.runner import BaseModule\n", encoding="utf-8")
    (tmp_path / "broken.py").write_text("def f(:\n", encoding="utf-8")
    report = scan(tmp_path)
    assert report.files == (tmp_path / "broken.py", tmp_path / "pkg" / "sub" / "a.py")
    assert [(f.file.name, f.old) for f in report.findings] == [
        ("broken.py", "<syntax error>"),
        ("a.py", "mmcv.runner.get_dist_info"),
    ]
    assert "cannot parse" in report.findings[0].note and not report.findings[0].auto_fixable


# ----------------------------------------------------------------------------- rewrite


def test_rewrite_fixes_the_one_to_one_imports_and_keeps_a_backup(backbone: Path) -> None:
    report = rewrite(backbone)
    assert [(r.file, r.backup, r.fixed) for r in report.rewritten] == [
        (backbone, backbone.with_name("papernet.py.orig"), 8)
    ]
    assert backbone.with_name("papernet.py.orig").read_text(encoding="utf-8") == OLD_BACKBONE
    new_text = backbone.read_text(encoding="utf-8")
    ast.parse(new_text)
    lines = new_text.splitlines()
    assert "from mmengine.model import constant_init, kaiming_init, trunc_normal_init" in lines
    assert "from mmengine.model import BaseModule  # runner helpers" in lines
    assert "from mmengine.runner import load_checkpoint" in lines
    assert "from mmcv.runner import auto_fp16" in lines  # no replacement: left for a hand
    assert "from mmpose.registry import MODELS as BACKBONES" in lines
    assert "from mmpose.models.utils.ops import resize" in lines
    assert "from mmcv.cnn import ConvModule, build_conv_layer, build_norm_layer" in lines  # untouched
    # what is left needs a hand, and a second rewrite has nothing to do
    left = table(scan(backbone))
    assert {old for _, old in left} == {
        "mmcv.runner.auto_fp16",
        "mmseg.utils.get_root_logger",
        "mmcv.runner.get_dist_info",
    }
    assert not any(fixable for _, fixable in left.values())
    assert rewrite(backbone).rewritten == ()
    assert sorted(p.name for p in backbone.parent.iterdir()) == ["papernet.py", "papernet.py.orig"]


def test_rewritten_imports_run_under_the_installed_mmengine_and_mmpose(backbone: Path) -> None:
    rewrite(backbone)
    imports = [
        line
        for line in backbone.read_text(encoding="utf-8").splitlines()
        if line.startswith(("from mmengine", "from mmpose"))
    ]
    assert len(imports) == 6
    namespace: dict[str, object] = {}
    exec("\n".join(imports), namespace)  # noqa: S102 - the lines the rewrite wrote
    from mmengine.model import BaseModule
    from mmpose.registry import MODELS

    assert namespace["BaseModule"] is BaseModule
    assert namespace["BACKBONES"] is MODELS
    assert callable(namespace["trunc_normal_init"]) and callable(namespace["resize"])


def test_rewrite_never_overwrites_a_backup(backbone: Path) -> None:
    backbone.with_name("papernet.py.orig").write_text("an older backup\n", encoding="utf-8")
    report = rewrite(backbone)
    assert report.rewritten[0].backup == backbone.with_name("papernet.py.orig.1")
    assert backbone.with_name("papernet.py.orig").read_text(encoding="utf-8") == "an older backup\n"
    assert backbone.with_name("papernet.py.orig.1").read_text(encoding="utf-8") == OLD_BACKBONE


def test_rewrite_keeps_layout_newlines_and_skips_shared_lines(tmp_path: Path) -> None:
    source = (
        "import os\r\n"
        "try:\r\n"
        "    from mmcv.runner import (BaseModule,\r\n"
        "                             get_dist_info)\r\n"
        "except ImportError:\r\n"
        "    pass\r\n"
        "from mmcv.runner import ModuleList; import sys\r\n"
        "import mmcv.fileio as fio, json\r\n"
        "from mmcv.cnn.bricks.registry import ATTENTION, FEEDFORWARD_NETWORK"
    )
    file = tmp_path / "shim.py"
    file.write_bytes(source.encode("utf-8"))
    report = rewrite(file)
    assert report.rewritten[0].fixed == 5
    data = file.read_bytes()
    assert b"\n" not in data.replace(b"\r\n", b"")  # every line ending stays CRLF
    assert not data.endswith(b"\r\n")  # and the last line still has none
    text = data.decode("utf-8")
    ast.parse(text)
    assert "    from mmengine.model import BaseModule\r\n    from mmengine.dist import get_dist_info\r\n" in text
    assert "from mmcv.runner import ModuleList; import sys" in text  # shares its line: left alone
    assert "import json\r\nimport mmengine.fileio as fio\r\n" in text
    assert text.endswith("from mmengine.registry import MODELS as ATTENTION, MODELS as FEEDFORWARD_NETWORK")
    shared = next(f for f in report.findings if f.old == "mmcv.runner.ModuleList")
    assert not shared.auto_fixable


def test_rewrite_wraps_long_imports(tmp_path: Path) -> None:
    names = "is_str, is_list_of, is_tuple_of, is_seq_of, to_1tuple, to_2tuple, to_3tuple, to_4tuple, mkdir_or_exist"
    file = tmp_path / "long.py"
    file.write_text(f"def f():\n    from mmcv.utils import {names}\n    return is_str\n", encoding="utf-8")
    rewrite(file)
    text = file.read_text(encoding="utf-8")
    assert all(len(line) <= 120 for line in text.splitlines())
    assert "    from mmengine.utils import (\n        is_str,\n" in text
    namespace: dict[str, object] = {}
    exec(text + "\nresult = f()\n", namespace)  # noqa: S102
    from mmengine.utils import is_str

    assert namespace["result"] is is_str


def test_rewrite_through_a_symlink_changes_the_real_file_once(tmp_path: Path) -> None:
    real = tmp_path / "real.py"
    real.write_text("from mmcv.runner import BaseModule\n", encoding="utf-8")
    (tmp_path / "link.py").symlink_to(real)
    report = rewrite(tmp_path)
    assert [r.backup.name for r in report.rewritten] == ["real.py.orig"]
    assert (tmp_path / "link.py").is_symlink()
    assert real.read_text(encoding="utf-8") == "from mmengine.model import BaseModule\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.py", "real.py", "real.py.orig"]


# ----------------------------------------------------------------------------- errors


def test_missing_path_is_a_port_error(tmp_path: Path) -> None:
    with pytest.raises(PortError, match="does not exist"):
        scan(tmp_path / "nope.py")
    with pytest.raises(PortError, match="does not exist"):
        rewrite(tmp_path / "nope")


def test_non_python_file_is_a_port_error_and_nothing_is_written(tmp_path: Path) -> None:
    text_file = tmp_path / "backbone.txt"
    text_file.write_text("from mmcv.runner import BaseModule\n", encoding="utf-8")
    broken = tmp_path / "broken.py"
    broken.write_text("from mmcv.runner import BaseModule\ndef f(:\n", encoding="utf-8")
    with pytest.raises(PortError, match=r"not Python source \(\.py\)"):
        rewrite(text_file)
    with pytest.raises(PortError, match=r"does not parse as Python \(line 2"):
        rewrite(broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.txt", "broken.py"]


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("argv", [["port"], ["doctor", "--port"]], ids=["port", "doctor-alias"])
def test_cli_port_prints_the_table_and_changes_nothing(backbone: Path, capsys, argv: list[str]) -> None:
    assert main([*argv, str(backbone)]) == 0
    out = capsys.readouterr().out
    assert "mmcv.runner.BaseModule" in out and "-> mmengine.model.BaseModule" in out
    assert "-> mmengine.dist.get_dist_info" in out and "-> (nothing)" in out
    assert "papernet.py:11" in out and "papernet.py:31" in out
    assert "11 finding(s): 8 auto, 3 by hand" in out
    assert backbone.read_text(encoding="utf-8") == OLD_BACKBONE


def test_cli_port_write_says_what_changed(backbone: Path, capsys) -> None:
    assert main(["port", str(backbone.parent), "--write"]) == 0
    out = capsys.readouterr().out
    assert f"rewrote {backbone} (8 import(s)); original in {backbone}.orig" in out
    assert "8 fixed, 3 to port by hand" in out


def test_cli_port_json(backbone: Path, capsys) -> None:
    assert main(["port", str(backbone), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["files"] == 1 and document["rewritten"] == []
    assert {(f["line"], f["old"]) for f in document["findings"]} == set(EXPECTED)


@pytest.mark.parametrize("name", ["missing.py", "backbone.txt"])
def test_cli_bad_port_target_exits_2_with_one_line(tmp_path: Path, name: str, capsys) -> None:
    (tmp_path / "backbone.txt").write_text("import mmcv.runner\n", encoding="utf-8")
    assert main(["port", str(tmp_path / name), "--write"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("adaptkit port: error: ") and captured.err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.txt"]


# ----------------------------------------------------------------------------- the rule table


def _resolves(path: str) -> bool:
    """Whether a dotted path names something in the installed packages."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for attr in parts[end:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.filterwarnings("ignore")
def test_every_mmcv_rule_names_something_mmcv_2_no_longer_has() -> None:
    olds = [rule.old for rule in PORT_RULES if rule.old.startswith("mmcv.")]
    assert len(olds) > 40
    still_there = [old for old in olds if _resolves(old)]
    assert still_there == []


@pytest.mark.filterwarnings("ignore")
def test_every_drop_in_replacement_exists_in_the_installed_stack() -> None:
    news = {rule.new for rule in PORT_RULES if rule.fixable and rule.new.startswith(("mmengine", "mmpose"))}
    assert len(news) > 40
    missing = sorted(new for new in news if not _resolves(new))
    assert missing == []


def test_rules_are_unique_and_complete() -> None:
    olds = [rule.old for rule in PORT_RULES]
    assert len(olds) == len(set(olds))
    assert all(rule.note for rule in PORT_RULES)
    assert all(rule.new or not rule.fixable for rule in PORT_RULES)
