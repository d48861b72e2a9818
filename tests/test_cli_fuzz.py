"""Random strings in every CLI option: exit 2 with one stderr line and no traceback, or a clean success.

Every option that takes a value is found from the parser itself, so a new
option is fuzzed without editing this file. Each command runs against a
tiny backbone file; nothing may appear in the working folder except the
``--out`` of a ``wrap`` that succeeded.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptkit.cli import build_parser, main

from .test_files import STOCK

TINY = """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.b = nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.a(x)
        return [y, self.b(y)]
"""

#: a run that is otherwise valid and cheap; {tiny} is the backbone, {out} a fresh fragment path
BASELINES: dict[str, list[str]] = {
    "probe": ["probe", "{tiny}", "--input", "1x3x32x32"],
    "plan": ["plan", "{tiny}", "--target", "8@4", "--input", "1x3x32x32"],
    "wrap": ["wrap", "{tiny}", "--target", STOCK, "--out", "{out}", "--input", "2x3x64x48"],
    "port": ["port", "{tiny_file}"],
    # bench would measure for minutes with valid values: its --out-dir lies under a file, so it fails fast
    "bench": ["bench", "{tiny}", "--out-dir", "{afile}/sub", "--quick"],
    "doctor": ["doctor", "--port", "{tiny_file}"],
    # smoke would train for minutes on a real fragment: a plain .py that is no pose config fails fast
    "smoke": ["smoke", "{tiny_file}", "--work-dir", "{afile}/sub"],
}
#: options whose random value may be valid and would start long work or write: the value goes under a file
UNDER_A_FILE = {
    ("bench", "--out-dir"),
    ("wrap", "--out"),
    ("port", "path"),
    ("doctor", "--port"),
    ("smoke", "--work-dir"),
}
#: values whose valid forms run long (a real benchmark) are fuzzed only where the baseline still fails fast
SKIP = {("probe", "--layers")}


def _value_options() -> list[tuple[str, str]]:
    """(command, option) for every option that takes a value, positional SOURCE/PATH included."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    found = []
    for command, subparser in sub.choices.items():
        for action in subparser._actions:
            if action.nargs == 0 or action.dest in ("help",):
                continue
            name = action.option_strings[-1] if action.option_strings else action.dest
            if (command, name) not in SKIP:
                found.append((command, name))
    return found


OPTIONS = _value_options()

# what a shell can hand over: any text without NUL, and undecodable bytes as surrogate escapes
VALUES = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40),
    st.binary(max_size=20).map(os.fsdecode).filter(lambda v: "\x00" not in v),
    st.sampled_from(["", " ", "-", "--", "0", "-1", "1e400", "nan", "inf", "[/x]", "x" * 300, "../../", ":", "::"]),
)


def test_every_command_is_fuzzed():
    assert {c for c, _ in OPTIONS} == set(BASELINES)
    assert ("wrap", "--checkpoint") in OPTIONS and ("plan", "source") in OPTIONS and ("bench", "--batch") in OPTIONS


def _argv(command: str, option: str, value: str, paths: dict[str, str]) -> list[str]:
    argv = [part.format(**paths) for part in BASELINES[command]]
    if (command, option) in UNDER_A_FILE:
        value = f"{paths['afile']}/{value}"
    positional = not option.startswith("-")
    if positional:
        index = 1 if command != "bench" else 1
        if command in ("port",) or option in ("source", "path", "fragment"):
            argv[index] = value
            return argv
    if option in argv:
        i = argv.index(option)
        del argv[i : i + 2]
    return [*argv, f"{option}={value}"]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own usage errors exit from parse_args
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _fuzz(command: str, option: str, value: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "afile").write_text("")
        tiny = root / "tiny.py"
        tiny.write_text(TINY)
        paths = {"tiny": f"{tiny}:Net", "tiny_file": str(tiny), "afile": str(root / "afile"), "out": str(root / "f.py")}
        before = sorted(p.name for p in root.iterdir())
        cwd = os.getcwd()
        os.chdir(root)  # a relative value lands here, where leftovers are seen
        try:
            code, out, err = _run(_argv(command, option, value, paths))
        finally:
            os.chdir(cwd)
        after = sorted(p.name for p in root.iterdir() if p.name != "__pycache__")
        assert "Traceback" not in err, err
        assert code in (0, 1, 2), (code, err)  # doctor exits 1 on a broken stack, which is not an error of input
        if code == 2:
            assert len(err.strip().splitlines()) == 1, err
            assert after == before, (after, err)
        else:
            assert set(after) - set(before) <= {"f.py"}
        assert not (root / "__pycache__").exists()


FAST = [(c, o) for c, o in OPTIONS if c != "wrap"]
SLOW = [(c, o) for c, o in OPTIONS if c == "wrap"]


@pytest.mark.parametrize(("command", "option"), FAST)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUES)
def test_random_strings_in_every_option(command, option, value):
    _fuzz(command, option, value)


@pytest.mark.slow
@pytest.mark.parametrize(("command", "option"), SLOW)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUES)
def test_random_strings_in_every_wrap_option(command, option, value):
    _fuzz(command, option, value)
