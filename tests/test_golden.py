"""Golden CLI outputs: what a user sees from probe, plan and wrap, compared byte for byte.

A change to the output shows up as a diff of a file under tests/golden/; when the
change is intended, regenerate every file with ``make golden`` (``pytest
tests/test_golden.py --overwrite-golden``) and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .conftest import HRNET, ROOT

GOLDEN = ROOT / "tests" / "golden"

#: name -> the arguments after `adaptkit`; FRAGMENT is a fresh file in a temporary folder
CASES: dict[str, list[str]] = {
    "probe_sctnet-b_640": ["probe", "sctnet", "--input", "2x3x640x640"],
    "probe_sctnet-s_json": ["probe", "sctnet-s", "--input", "2x3x256x192", "--json"],
    "plan_sctnet-b_32at4": ["plan", "sctnet", "--target", "32@4", "--input", "2x3x256x192"],
    "plan_sctnet-s_hrnet_json": ["plan", "sctnet-s", "--target", HRNET, "--json"],
    "wrap_sctnet-s_hrnet": ["wrap", "sctnet-s", "--target", HRNET, "--out", "FRAGMENT"],
    "error_unknown_source": ["probe", "sctnet-x", "--input", "2x3x64x64"],
    "error_bad_input": ["plan", "sctnet", "--target", "32@4", "--input", "2x3x64"],
}

_VARYING = [
    (re.compile(r"\| (\d+\.\d+) s$", re.M), "| <seconds> s"),  # the probe's own timing
    (re.compile(r'"seconds": \d+(\.\d+)?(e-?\d+)?'), '"seconds": <seconds>'),
]


def _normalise(text: str) -> str:
    for pattern, replacement in _VARYING:
        text = pattern.sub(replacement, text)
    return text


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_output_matches_golden(name: str, run_cli, tmp_path: Path, request, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative names in the output do not depend on where the tests run
    argv = ["FRAGMENT.py" if a == "FRAGMENT" else a for a in CASES[name]]
    code, out, err = run_cli(*argv)
    text = _normalise(f"$ adaptkit {' '.join(CASES[name])}\n[exit {code}]\n--- stdout\n{out}--- stderr\n{err}")
    path = GOLDEN / f"{name}.txt"
    if request.config.getoption("--overwrite-golden") or os.environ.get("ADAPTKIT_OVERWRITE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no golden file {path.name}; run 'make golden'"
    assert text == path.read_text(encoding="utf-8"), f"{name}: output changed; if intended, run 'make golden'"
    if "FRAGMENT" in CASES[name]:
        assert (tmp_path / "FRAGMENT.py").is_file()
