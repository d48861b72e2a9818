"""adaptkit doctor: the known-bad rules on made-up version sets, and the real environment."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import subprocess
import sys

import pytest

from adaptkit.cli import main
from adaptkit.cli.doctor import render_report
from adaptkit.tools.doctor import _has_compiled_ext, check_environment
from adaptkit.tools.stack_rules import (
    RULES,
    DoctorReport,
    Finding,
    Severity,
    Stack,
    _at_least,
    _below,
    _release,
    diagnose,
)

GOOD_VERSIONS = {
    "torch": "2.14.1",
    "torchvision": "0.29.1",
    "mmengine": "0.10.7",
    "mmcv-lite": "2.1.0",
    "mmpose": "1.1.0",
    "numpy": "1.26.4",
    "setuptools": "80.10.2",
    "opencv-python": "4.11.0.86",
    "xtcocotools": "1.14.3",
    "einops": "0.8.2",
    "torchinfo": "1.8.0",
    "rich": "15.0.0",
    "json-tricks": "3.17.3",
    "munkres": "3.0.0",
    "scipy": "1.17.1",
    "matplotlib": "3.11.2",
}
MMPOSE_1_1_BOUNDS = {"mmcv": ("2.0.0rc4", "2.1.0"), "mmengine": ("0.6.0", "1.0.0")}
GOOD = Stack(
    versions=GOOD_VERSIONS,
    mmcv_ops=False,
    torchvision_error=None,
    mmpose_requires=("chumpy", "json-tricks", "numpy", "xtcocotools"),
    mmpose_bounds=MMPOSE_1_1_BOUNDS,
)


def with_versions(stack: Stack = GOOD, **changes: str | None) -> Stack:
    """GOOD with some versions changed (None: not installed); keyword names use _ for -."""
    versions = dict(stack.versions)
    versions.update({name.replace("_", "-"): version for name, version in changes.items()})
    return dataclasses.replace(stack, versions=versions)


def codes(findings: tuple[Finding, ...], severity: Severity | None = None) -> set[str]:
    return {f.code for f in findings if severity is None or f.severity is severity}


# ----------------------------------------------------------------------------- rules


def test_good_stack_has_no_errors_and_one_known_warning() -> None:
    findings = diagnose(GOOD)
    assert codes(findings, Severity.ERROR) == set()
    # torch >= 2.6 with mmengine 0.10: Runner checkpoints need a trusted load
    assert codes(findings, Severity.WARN) == {"torch-weights-only"}
    # the one note: chumpy is declared, missing, and that is fine
    assert codes(findings) == {"chumpy", "torch-weights-only"}


def test_weights_only_warning_only_from_torch_2_6() -> None:
    assert "torch-weights-only" not in codes(diagnose(with_versions(torch="2.5.1", torchvision="0.20.1")))
    finding = next(f for f in diagnose(GOOD) if f.code == "torch-weights-only")
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1" in finding.fix


@pytest.mark.parametrize(
    ("stack", "code", "fix_part"),
    [
        (with_versions(mmpose="1.3.2"), "mmpose-ops", "mmpose==1.1.0"),
        (with_versions(mmpose="1.2.0"), "mmpose-ops", "mmpose==1.1.0"),
        (with_versions(numpy="2.1.3"), "numpy2-xtcocotools", "numpy<2"),
        (with_versions(setuptools="81.0.0"), "setuptools-81", "setuptools<81"),
        (with_versions(opencv_python="4.12.0.88"), "opencv-numpy1", "opencv-python<4.12"),
        (
            dataclasses.replace(GOOD, torchvision_error="RuntimeError: operator torchvision::nms does not exist"),
            "torchvision-import",
            "torchvision==0.29.1",
        ),
        (with_versions(mmpose=None), "missing-mm", "--no-deps mmpose==1.1.0"),
        (with_versions(mmengine=None), "missing-mm", "requirements/stack.txt"),
        (with_versions(mmcv_lite=None), "missing-mm", "requirements/stack.txt"),
        (with_versions(mmcv_lite=None, mmcv_full="1.7.2"), "mmcv-1x", "mmcv-lite==2.1.0"),
        (with_versions(mmcv_lite="2.2.0"), "mmpose-mmcv-range", "mmcv-lite>=2.0.0rc4,<=2.1.0"),
        (with_versions(mmengine="0.5.0"), "mmpose-mmengine-range", "mmengine>=0.6.0"),
        (with_versions(xtcocotools=None), "mmpose-needs", "xtcocotools"),
        (with_versions(opencv_python=None), "mmpose-needs", "opencv-python"),
        (with_versions(einops=None), "missing-core", "pip install einops"),
    ],
)
def test_each_known_bad_combination_is_an_error_with_its_fix(stack: Stack, code: str, fix_part: str) -> None:
    findings = diagnose(stack)
    assert code in codes(findings, Severity.ERROR)
    finding = next(f for f in findings if f.code == code)
    assert fix_part in finding.fix
    assert findings[0].severity is Severity.ERROR  # errors come first


def test_mmpose_1_2_with_compiled_ops_is_fine() -> None:
    stack = dataclasses.replace(with_versions(mmcv_lite=None, mmcv="2.1.0", mmpose="1.3.2"), mmcv_ops=True)
    assert "mmpose-ops" not in codes(diagnose(stack))


def test_numpy_2_without_xtcocotools_is_not_flagged() -> None:
    stack = with_versions(numpy="2.1.3", xtcocotools=None, mmpose=None)
    assert "numpy2-xtcocotools" not in codes(diagnose(stack))


def test_opencv_4_12_with_numpy_2_is_not_the_opencv_finding() -> None:
    findings = diagnose(with_versions(opencv_python="4.12.0.88", numpy="2.1.3"))
    assert "opencv-numpy1" not in codes(findings)
    assert "numpy2-xtcocotools" in codes(findings)  # but xtcocotools still breaks


def test_torchvision_from_another_torch_release_is_a_warning() -> None:
    findings = diagnose(with_versions(torchvision="0.24.0"))
    assert codes(findings, Severity.WARN) == {"torchvision-pair", "torch-weights-only"}
    assert "torchvision==0.29" in next(f for f in findings if f.code == "torchvision-pair").fix


def test_two_mmcv_distributions_are_a_warning() -> None:
    findings = diagnose(with_versions(mmcv="2.1.0"))
    assert "two-mmcv" in codes(findings, Severity.WARN)


def test_chumpy_installed_or_not_declared_gives_no_note() -> None:
    assert "chumpy" not in codes(diagnose(with_versions(chumpy="0.70")))
    assert "chumpy" not in codes(diagnose(dataclasses.replace(GOOD, mmpose_requires=("numpy",))))


def test_every_rule_is_silent_on_an_empty_stack_except_missing_packages() -> None:
    findings = diagnose(Stack(versions={}))
    assert codes(findings) == {"missing-core", "missing-mm"}
    assert len(RULES) >= 12


@pytest.mark.parametrize(
    ("version", "release"),
    [("2.0.0rc4", (2, 0, 0)), ("2.14.1+cu130", (2, 14, 1)), ("4.11.0.86", (4, 11, 0, 86)), ("1.26", (1, 26))],
)
def test_release_parser(version: str, release: tuple[int, ...]) -> None:
    assert _release(version) == release


def test_version_comparison_orders_prereleases_below_releases() -> None:
    assert _below("2.0.0rc4", "2.0.0")
    assert _at_least("2.0.0", "2.0.0rc4")
    assert _at_least("81.0.0", "81") and not _at_least("80.10.2", "81")
    assert not _at_least(None, "1")


# ----------------------------------------------------------------------------- this machine


@pytest.fixture(scope="module")
def report():
    return check_environment()


def test_real_environment_reports_the_installed_stack(report) -> None:
    versions = {p.name: p.version for p in report.packages}
    notes = {p.name: p.note for p in report.packages}
    assert versions["mmpose"] == "1.1.0" == importlib.metadata.version("mmpose")
    assert versions["mmengine"] == importlib.metadata.version("mmengine")
    assert versions["mmcv"] == importlib.metadata.version("mmcv-lite")
    assert notes["mmcv"] == "mmcv-lite, no compiled ops"
    assert versions["torch"] == importlib.metadata.version("torch")
    assert int(versions["numpy"].split(".")[0]) < 2
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(versions) >= {"torchvision", "setuptools", "opencv", "xtcocotools", "einops", "torchinfo", "rich"}
    assert report.cuda.startswith("not available") or "CUDA" in report.cuda
    assert not report.broken, [f.problem for f in report.findings]


def test_doctor_command_exits_0_on_this_stack(capsys) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "mmpose" in out and "1.1.0" in out and "mmcv-lite" in out
    assert "usable, with 1 warning(s)" in out and "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" in out


def test_doctor_json_parses(capsys) -> None:
    assert main(["doctor", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["broken"] is False
    packages = {p["name"]: p for p in document["packages"]}
    assert packages["mmpose"]["version"] == "1.1.0"
    assert all(f["severity"] in {"ok", "warn"} for f in document["findings"])


def test_write_without_port_is_a_usage_error(capsys) -> None:
    assert main(["doctor", "--write"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--port" in err


@pytest.mark.slow
def test_doctor_as_a_module_in_a_fresh_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "adaptkit", "doctor"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "usable, with 1 warning(s)" in result.stdout
    # doctor never imports mmcv, so mmcv-lite's import warning stays away
    assert "MultiScaleDeformableAttention" not in result.stdout + result.stderr


def test_a_broken_report_renders_each_problem_with_its_fix_and_exit_1(capsys) -> None:
    broken = DoctorReport(
        packages=(), findings=diagnose(with_versions(numpy="2.1.3", setuptools="81.0.0")), cuda="none"
    )
    assert broken.broken
    assert render_report(broken) == 1
    out = capsys.readouterr().out
    assert "numpy.dtype size changed" in out and 'fix: pip install "numpy<2"' in out
    assert '_base_ = ["mmpose::...' in out  # brackets in a problem are text, not markup
    assert "broken: 2 error(s)" in out
    assert render_report(broken, as_json=True) == 1
    document = json.loads(capsys.readouterr().out)
    assert {f["code"] for f in document["findings"]} >= {"numpy2-xtcocotools", "setuptools-81"}


def test_compiled_ext_is_found_by_file_without_importing(tmp_path, monkeypatch) -> None:
    import importlib.machinery

    for name, has_ext in (("fake_full_mmcv", True), ("fake_lite_mmcv", False)):
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n", encoding="utf-8")
        if has_ext:
            (package / f"_ext{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _has_compiled_ext("fake_full_mmcv") is True
    assert _has_compiled_ext("fake_lite_mmcv") is False
    assert _has_compiled_ext("no_such_package_here") is False
    assert "fake_full_mmcv" not in sys.modules


def test_a_clean_report_says_all_good_and_exits_0(capsys) -> None:
    clean = DoctorReport(
        packages=(), findings=diagnose(with_versions(torch="2.5.1", torchvision="0.20.1")), cuda="none"
    )
    assert not clean.broken
    assert render_report(clean) == 0
    assert "all good" in capsys.readouterr().out
