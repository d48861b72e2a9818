"""Config values adaptkit reads are type-checked: one ConfigError line naming the key, never a traceback."""

from __future__ import annotations

import re

import pytest

from adaptkit.errors import ConfigError
from adaptkit.mm.config_values import config_int, config_pair, config_section

from .test_files import STOCK


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("model=dict(head=None)", "model.head is None"),
        ("model=dict(head='abc')", "model.head is 'abc'"),
        ("model=dict(head=dict(in_channels='abc'))", "model.head.in_channels is 'abc'"),
        ("model=dict(head=dict(in_channels=10**30))", "model.head.in_channels is 1000"),
        ("codec=dict(input_size='ab')", "codec.input_size is 'ab'"),
        ("codec=dict(input_size=(64,))", r"codec.input_size is \(64,\)"),
        ("codec=dict(input_size=(1e400, 3))", "codec.input_size is inf"),
        ("codec=dict(heatmap_size='xy')", "codec.heatmap_size is 'xy'"),
    ],
)
def test_bad_target_config_values(tmp_path, run_cli, override, words):
    config = tmp_path / "cfg.py"
    config.write_text(f"_base_ = [{STOCK!r}]\n{override}\n")
    code, out, err = run_cli("plan", "sctnet-s", "--target", str(config), "--input", "2x3x64x48")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(words, err), err


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("model=dict(backbone=None)", "model.backbone is None"),
        ("model=dict(backbone='x')", "model.backbone is 'x'"),
        ("model=dict(neck='x')", "model.neck is 'x'"),
    ],
)
def test_bad_source_config_values(tmp_path, run_cli, override, words):
    config = tmp_path / "cfg.py"
    config.write_text(f"_base_ = [{STOCK!r}]\n{override}\n")
    code, out, err = run_cli("plan", str(config), "--target", "32@4", "--input", "2x3x64x48")
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err


def test_the_readers():
    assert config_pair(64, "k") == (64, 64) and config_pair((192, 256.0), "k") == (192, 256)
    assert config_int(32.0, "k") == 32
    for bad in (True, 0, -1, 2.5, "3", None, float("nan")):
        with pytest.raises(ConfigError, match="config k is"):
            config_int(bad, "k")
    for bad in ("ab", (1,), (1, 2, 3), b"xy", None):
        with pytest.raises(ConfigError, match=r"\(width, height\)"):
            config_pair(bad, "k")
    with pytest.raises(ConfigError, match="dict"):
        config_section([1], "k")
