"""User code that exits or fails (a SOURCE import, a factory, a forward, a config): one line, exit 2.

And SOURCE paths that exist but are not what adaptkit needs are named for what they are.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

import adaptkit
from adaptkit.errors import ConfigError, ProbeError, SourceError

NET = """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, depth=1):
        super().__init__()
        {init}
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)

    def forward(self, x):
        {forward}
        return self.conv(x)
"""


def write_net(folder: Path, name: str = "net.py", *, top: str = "", init: str = "pass", forward: str = "pass") -> Path:
    path = folder / name
    path.write_text(top + "\n" + NET.format(init=init, forward=forward))
    return path


@pytest.mark.parametrize(
    ("where", "words"),
    [
        (dict(top="import sys\nsys.exit(3)"), r"importing .* failed: it called sys.exit\(3\)"),
        (dict(init="import sys; sys.exit(3)"), r"calling .* failed: it called sys.exit\(3\)"),
        (dict(top="class Stop(BaseException): pass\nraise Stop('no')"), "importing .* failed: Stop: no"),
    ],
)
def test_a_source_that_exits_is_a_source_error(tmp_path, where, words):
    path = write_net(tmp_path, **where)
    with pytest.raises(SourceError, match=words):
        adaptkit.resolve_source(f"{path}:Net")


def test_a_forward_that_exits_is_a_probe_error(tmp_path):
    path = write_net(tmp_path, forward="import sys; sys.exit(3)")
    with pytest.raises(ProbeError, match=r"called sys.exit\(3\)"):
        adaptkit.probe(adaptkit.resolve_source(f"{path}:Net"), (1, 3, 32, 32))


def test_a_config_that_exits_is_a_config_error(tmp_path):
    config = tmp_path / "cfg.py"
    config.write_text("import sys\nsys.exit(3)\nmodel = dict(type='x')\n")
    from adaptkit.mm.openmmlab import load_config

    with pytest.raises(ConfigError, match=r"sys.exit\(3\)"):
        load_config(str(config))


@pytest.mark.parametrize(
    "case",
    ["import", "factory", "forward", "config-source", "config-target"],
)
def test_cli_user_code_that_exits_gives_exit_2(tmp_path, cli_subprocess, case):
    exit_at = {"import": dict(top="import sys\nsys.exit(3)"), "factory": dict(init="import sys; sys.exit(3)")}
    path = write_net(
        tmp_path, **exit_at.get(case, dict(forward="import sys; sys.exit(3)" if case == "forward" else "pass"))
    )
    config = tmp_path / "cfg.py"
    config.write_text("import sys\nsys.exit(3)\nmodel = dict(type='x')\n")
    source = str(config) if case == "config-source" else f"{path}:Net"
    target = str(config) if case == "config-target" else "32@4"
    done = cli_subprocess("plan", source, "--target", target, "--input", "1x3x32x32")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "sys.exit(3)" in done.stderr


def test_no_pycache_is_written_beside_a_source(tmp_path):
    write_net(tmp_path, "helper.py")
    path = write_net(tmp_path, top="import helper", init="raise ValueError('bad')")
    with pytest.raises(SourceError, match="bad"):
        adaptkit.resolve_source(f"{path}:Net")
    good = write_net(tmp_path, "good.py")
    adaptkit.resolve_source(f"{good}:Net")
    assert not (tmp_path / "__pycache__").exists()


def test_a_folder_is_not_said_not_to_exist(tmp_path):
    with pytest.raises(SourceError, match="is a folder, not a Python file"):
        adaptkit.resolve_source(f"{tmp_path}:Net")
    with pytest.raises(SourceError, match="does not exist"):
        adaptkit.resolve_source(f"{tmp_path}/missing.py:Net")


def test_a_backbone_file_without_a_name_is_not_run_as_a_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    write_net(tmp_path, "good.py", top=f"open({str(marker)!r}, 'w').close()")
    with pytest.raises(SourceError, match=r"defines Net but no config .*write good.py:Net"):
        adaptkit.resolve_source("good.py")
    assert not marker.exists()


def test_a_source_name_that_is_not_utf8(tmp_path, run_cli):
    name = os.fsdecode(b"bad\xfe.py")
    code, out, err = run_cli("probe", f"{tmp_path / name}:Net")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "UTF-8" in err
    err.encode("utf-8")  # printable


def test_a_source_path_too_long(run_cli):
    code, out, err = run_cli("probe", "/tmp/" + "a" * 300 + ".py:Net")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "too long" in err


def test_a_config_folder_is_named(tmp_path):
    from adaptkit.mm.openmmlab import load_config

    folder = tmp_path / "cfg.py"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(str(folder))


def test_module_callable_that_exits(tmp_path, monkeypatch):
    (tmp_path / "exiting_mod.py").write_text(textwrap.dedent("import sys\nsys.exit(4)\n"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SourceError, match=r"sys.exit\(4\)"):
        adaptkit.resolve_source("exiting_mod:Net")
