"""User text prints as written: sources, paths and output keys are never read as rich markup."""

from __future__ import annotations

import pytest

NET = """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)

    def forward(self, x):
        return {"[/x]": self.conv(x), "[bold]b": self.conv(x) * 2}
"""


@pytest.mark.parametrize("command", ["plan", "probe"])
def test_markup_in_user_text_prints_verbatim(tmp_path, monkeypatch, run_cli, command):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "run[v2]"
    folder.mkdir()
    (folder / "net.py").write_text(NET)
    extra = ("--target", "32@4") if command == "plan" else ()
    code, out, err = run_cli(command, "run[v2]/net.py:Net", "--input", "1x3x32x32", *extra)
    assert code == 0, err
    assert "run[v2]/net.py:Net" in out
    assert "[/x]" in out and "[bold]b" in out
