"""``adaptkit probe`` end to end: the real entry point, the table, --json, --layers and bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import adaptkit
from adaptkit.cli import main

NET = textwrap.dedent(
    """
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self, width=8):
            super().__init__()
            self.stem = nn.Conv2d(3, width, 3, 2, 1)
            self.body = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width))

        def forward(self, x):
            a = self.stem(x)
            b = self.body(a)
            return {"low": a, "high": b, "extra": [x, a]}


    class Branchy(Net):
        def forward(self, x):
            out = super().forward(x)
            if out["high"].mean().item() > 1e9:
                out["high"] = out["high"] * 0
            return out


    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 12, 16, 16)
            self.cls = nn.Parameter(__import__("torch").zeros(1, 1, 12))

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)
            return __import__("torch").cat([self.cls.expand(t.shape[0], -1, -1), t], 1)


    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)
            self.head = nn.Sequential(nn.Conv2d(5, 4, 1))

        def forward(self, x):
            return self.head(self.stem(x))
    """
)


@pytest.fixture()
def net_file(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(NET)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "adaptkit", "probe", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_entry_point_prints_the_table(net_file):
    done = run_cli(f"{net_file}:Net", "--input", "2x3x64x96", "--arg", "width=4")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no library warning leaks
    lines = done.stdout.splitlines()
    row = {line.split("│")[1].strip(): line for line in lines if line.count("│") > 2}
    assert list(row) == ["low", "high", "extra.0", "extra.1"]
    assert "2x4x32x48" in row["low"] and " 2 " in row["low"]
    assert "2x8x16x24" in row["high"] and " 4 " in row["high"]
    assert "input passthrough" in row["extra.0"]
    assert "same tensor as low" in row["extra.1"]
    assert "424 parameters | mode meta | " in done.stdout


def test_entry_point_rejects_a_bad_input_shape(net_file):
    done = run_cli(f"{net_file}:Net", "--input", "2x3x640")
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert "adaptkit probe: error: input shape '2x3x640' has 3 dimensions" in done.stderr


def test_json_document(net_file, capsys):
    assert main(["probe", f"{net_file}:Net", "--input", "2x3x64x64", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["source"] == f"{net_file}:Net"
    assert document["input_shape"] == [2, 3, 64, 64]
    assert document["mode"] == "meta" and document["fallback_reason"] is None
    assert document["params"] == 3 * 8 * 9 + 8 + 8 * 16 * 9 + 16 + 2 * 16
    assert document["seconds"] >= 0
    assert "layers" not in document
    features = {f["path"]: f for f in document["features"]}
    assert list(features) == ["low", "high", "extra.0", "extra.1"]
    assert features["high"] == {
        "path": "high",
        "module": "body",
        "shape": [2, 16, 16, 16],
        "channels": 16,
        "stride": [4, 4],
        "layout": "NCHW",
        "spatial": [16, 16],
        "prefix_tokens": 0,
        "is_input": False,
        "alias_of": None,
    }
    assert features["extra.0"]["is_input"] is True
    assert features["extra.1"]["alias_of"] == "low"


def test_json_with_layers_and_a_real_fallback(net_file, capsys):
    assert main(["probe", f"{net_file}:Branchy", "--input", "1x3x64x64", "--json", "--layers"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["mode"] == "real"
    assert ".item()" in document["fallback_reason"]
    layers = {row["name"]: row for row in document["layers"]}
    assert layers["body.0"] == {
        "name": "body.0",
        "type": "Conv2d",
        "depth": 2,
        "output_shape": [1, 16, 16, 16],
        "params": 1168,
    }
    assert layers[""]["output_shape"] is None


def test_layers_table_and_token_notes(net_file, capsys):
    assert main(["probe", f"{net_file}:Tokens", "--input", "1x3x224x224", "--layers"]) == 0
    out = capsys.readouterr().out
    assert "1x197x12" in out and "NLC" in out and "1 prefix token" in out
    assert "layers" in out and "patch" in out and "Conv2d" in out
    assert "mode meta" in out


def test_real_fallback_is_reported_in_the_table(net_file, capsys):
    assert main(["probe", f"{net_file}:Branchy", "--input", "1x3x64x64"]) == 0
    out = capsys.readouterr().out
    assert "mode real (meta trace failed in the top-level forward (Branchy): calls .item() on a tensor)" in " ".join(
        out.split()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{net}:Broken", "--input", "1x3x32x32"], r"backbone crashed in module 'head\.0' \(Conv2d\)"),
        (["{net}:Branchy", "--input", "1x3x32x32", "--mode", "meta"], r"meta trace failed .*\.item\(\)"),
        (["{net}:Net", "--arg", "width"], r"--arg 'width' is not KEY=VALUE"),
        (["{net}:Missing", "--input", "1x3x32x32"], r"Missing"),
        (["sctnet", "--input", "1x3x64x64"], r"\(BatchNorm2d\) .* probe a batch of 2 or more \(2xCxHxW\)"),
        (["sctnet", "--input", "1x3x64x64", "--mode", "meta"], r"meta trace failed .* probe a batch of 2 or more"),
        (
            ["mmpose::body_2d_keypoint/rtmpose/coco/rtmpose-s_8xb256-420e_coco-256x192.py", "--input", "1x3x256x192"],
            r"cannot build 'CSPNeXt' from the config: it needs mmdet, which is not installed$",
        ),
    ],
)
def test_errors_are_one_line(net_file, capsys, args, message):
    args = [a.format(net=net_file) for a in args]
    assert main(["probe", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adaptkit probe: error: ")
    assert "Traceback" not in captured.err
    assert re.search(message, lines[0])


def test_unknown_mode_is_a_usage_error(net_file, capsys):
    with pytest.raises(SystemExit) as info:
        main(["probe", f"{net_file}:Net", "--mode", "fast"])
    assert info.value.code == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err


SCTNET = Path(adaptkit.__file__).parent / "zoo" / "sctnet.py"


@pytest.mark.skipif(not SCTNET.exists(), reason="adaptkit/zoo/sctnet.py is not there yet")
def test_sctnet_json(capsys):
    assert main(["probe", "sctnet", "--input", "2x3x640x640", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["mode"] == "meta" and document["params"] == 16_841_792
    got = {f["path"]: (f["shape"], f["stride"], f["is_input"], f["alias_of"]) for f in document["features"]}
    assert got == {
        "0": ([2, 256, 80, 80], [8, 8], False, None),
        "1": ([2, 128, 80, 80], [8, 8], False, None),
        "2.0": ([2, 3, 640, 640], [1, 1], True, None),
        "2.1.0": ([2, 256, 80, 80], [8, 8], False, "0"),
        "2.1.1": ([2, 512, 20, 20], [32, 32], False, None),
        "2.1.2": ([2, 256, 40, 40], [16, 16], False, None),
    }


@pytest.mark.skipif(not SCTNET.exists(), reason="adaptkit/zoo/sctnet.py is not there yet")
def test_sctnet_table(capsys):
    assert main(["probe", "sctnet", "--input", "2x3x512x1024"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    for expected in ("2x256x64x128", "2x512x16x32", "2x256x32x64", "input passthrough", "same tensor as 0"):
        assert expected in captured.out
    assert "16,841,792 parameters | mode meta" in captured.out
