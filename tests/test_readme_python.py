"""The README's Python examples run as written (the fragment block is a config, not a script)."""

from __future__ import annotations

import re

import pytest

from .conftest import ROOT


def _python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if not b.lstrip().startswith("_base_")]


def test_the_readme_has_python_examples():
    assert len(_python_blocks()) >= 2


@pytest.mark.slow  # probes SCTNet-B at 640x640, builds and fuses a stock estimator (~20 s on 2 cores)
def test_readme_python_examples_run_as_written(monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples name adapters/ relative to the repository
    namespace: dict = {}
    for block in _python_blocks():  # in order: later blocks use names the earlier ones import
        exec(compile(block, "README.md", "exec"), namespace)
    assert tuple(namespace["feature"].shape) == (2, 32, 64, 48)
    assert namespace["fast"] is not namespace["model"]
