"""Check the installed OpenMMLab stack against the combinations known to break.

The OpenMMLab packages fail in ways that are hard to trace back to a version
(an import error deep inside mmpose, "numpy.dtype size changed", a missing
``pkg_resources``). ``check_environment`` reads the installed versions
cheaply (package metadata, no mmcv/mmpose import) and runs a table of small
rules over them (``adaptkit.tools.stack_rules``, pure functions of a
:class:`Stack`, tested on made-up version numbers).
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata
import importlib.util
import platform
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "Severity",
    "PackageStatus",
    "Finding",
    "DoctorReport",
    "Stack",
    "Rule",
    "RULES",
    "INSTALL_LINE",
    "collect_stack",
    "diagnose",
    "check_environment",
]

from adaptkit.tools.stack_rules import (
    _DISTRIBUTIONS,
    INSTALL_LINE,
    RULES,
    DoctorReport,
    Finding,
    PackageStatus,
    Rule,
    Severity,
    Stack,
    diagnose,
)

# ----------------------------------------------------------------------------- collecting


def _installed_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _declared_requirements(dist: str) -> tuple[str, ...]:
    """Names of a distribution's unconditional requirements (extras left out)."""
    try:
        requirements = importlib.metadata.requires(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return ()
    names = []
    for requirement in requirements:
        if re.search(r"\bextra\s*==", requirement):
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match:
            names.append(match.group(1).lower().replace("_", "-"))
    return tuple(dict.fromkeys(names))


def _mmpose_bounds_from_source() -> dict[str, tuple[str, str]]:
    """The mmcv/mmengine ranges ``mmpose/__init__.py`` asserts, read without importing it."""
    try:
        spec = importlib.util.find_spec("mmpose")
    except (ImportError, ValueError):
        return {}
    if spec is None or spec.origin is None:
        return {}
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
    constants: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            constants[node.targets[0].id] = node.value.value
    bounds = {}
    for package in ("mmcv", "mmengine"):
        low, high = constants.get(f"{package}_minimum_version"), constants.get(f"{package}_maximum_version")
        if low and high:
            bounds[package] = (low, high)
    return bounds


def _has_compiled_ext(package: str = "mmcv") -> bool:
    """Whether mmcv's compiled extension ``mmcv/_ext*.so`` is there.

    Looks for the file beside the package instead of ``find_spec("mmcv._ext")``,
    which imports mmcv (about 2 s); importing mmcv.ops would print warnings or crash.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        (Path(folder) / f"_ext{suffix}").is_file()
        for folder in spec.submodule_search_locations
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def _torchvision_error(versions: Mapping[str, str | None]) -> str | None:
    if versions.get("torchvision") is None or versions.get("torch") is None:
        return None
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # any failure here is the finding
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    return None


def _cuda() -> str:
    try:
        import torch
    except Exception:
        return "not available (torch does not import)"
    built = torch.version.cuda
    try:
        available = torch.cuda.is_available()
    except Exception:
        available = False
    if not available:
        return f"not available (torch built for CUDA {built})" if built else "not available (CPU-only torch)"
    return f"{torch.cuda.get_device_name(0)}, CUDA {built}"


def collect_stack() -> Stack:
    """Read the installed stack: metadata, a find_spec for mmcv's ops, one torchvision import."""
    versions = _installed_versions()
    return Stack(
        versions=versions,
        mmcv_ops=_has_compiled_ext(),
        torchvision_error=_torchvision_error(versions),
        mmpose_requires=_declared_requirements("mmpose") if versions.get("mmpose") else (),
        mmpose_bounds=_mmpose_bounds_from_source() if versions.get("mmpose") else {},
    )


def _packages(stack: Stack) -> tuple[PackageStatus, ...]:
    rows = [PackageStatus("python", platform.python_version(), platform.python_implementation())]
    for name in ("torch", "torchvision", "mmengine"):
        rows.append(PackageStatus(name, stack.version(name), "" if stack.has(name) else "not installed"))
    mmcv = stack.mmcv()
    if mmcv is None:
        rows.append(PackageStatus("mmcv", None, "not installed"))
    else:
        ops = "compiled ops" if stack.mmcv_ops else "no compiled ops"
        rows.append(PackageStatus("mmcv", mmcv[1], f"{mmcv[0]}, {ops}"))
    for name in ("mmpose", "numpy", "setuptools"):
        rows.append(PackageStatus(name, stack.version(name), "" if stack.has(name) else "not installed"))
    opencv = stack.opencv()
    rows.append(
        PackageStatus("opencv", opencv[1], opencv[0]) if opencv else PackageStatus("opencv", None, "not installed")
    )
    for name in ("xtcocotools", "einops", "torchinfo", "rich"):
        rows.append(PackageStatus(name, stack.version(name), "" if stack.has(name) else "not installed"))
    return tuple(rows)


def check_environment() -> DoctorReport:
    """Versions of the stack, the known-bad combinations found in it, and the CUDA device."""
    stack = collect_stack()
    return DoctorReport(packages=_packages(stack), findings=diagnose(stack), cuda=_cuda())
