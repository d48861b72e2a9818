"""The known-bad combinations of the OpenMMLab stack, as small pure rules over a ``Stack`` of versions.

Each rule is a pure function of a :class:`Stack`, so the rules are tested on
made-up version numbers; ``adaptkit.tools.doctor`` collects the real versions.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Severity", "PackageStatus", "Finding", "DoctorReport", "Stack", "Rule", "RULES", "INSTALL_LINE", "diagnose"]

INSTALL_LINE = "pip install -r requirements/stack.txt && pip install --no-deps mmpose==1.1.0"

OPENCV_DISTRIBUTIONS = (
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)
MMCV_DISTRIBUTIONS = ("mmcv", "mmcv-lite", "mmcv-full")
# What mmpose needs at run time besides torch/mmcv/mmengine (its declared list minus chumpy).
MMPOSE_RUNTIME_NEEDS = ("json-tricks", "munkres", "scipy", "matplotlib", "xtcocotools")
ADAPTKIT_NEEDS = ("torch", "einops", "torchinfo", "rich")
_DISTRIBUTIONS = (
    "torch",
    "torchvision",
    "mmengine",
    *MMCV_DISTRIBUTIONS,
    "mmpose",
    "numpy",
    "setuptools",
    *OPENCV_DISTRIBUTIONS,
    "xtcocotools",
    "einops",
    "torchinfo",
    "rich",
    "chumpy",
    "json-tricks",
    "munkres",
    "scipy",
    "matplotlib",
)


class Severity(enum.Enum):
    """How bad a finding is; only ``error`` makes the report broken."""

    OK = "ok"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True)
class PackageStatus:
    """One row of the package table: ``version`` is None when not installed."""

    name: str
    version: str | None
    note: str


@dataclass(frozen=True)
class Finding:
    """One known problem (or a known, harmless oddity) and how to fix it."""

    severity: Severity
    problem: str
    fix: str
    code: str


@dataclass(frozen=True)
class DoctorReport:
    """Installed versions, findings, and what CUDA device torch sees."""

    packages: tuple[PackageStatus, ...]
    findings: tuple[Finding, ...]
    cuda: str

    @property
    def broken(self) -> bool:
        return any(f.severity is Severity.ERROR for f in self.findings)


@dataclass(frozen=True)
class Stack:
    """The facts the rules look at; everything a rule needs, nothing imported.

    ``versions`` maps distribution names (``"mmcv-lite"``, ``"opencv-python"``)
    to installed versions; a missing key or ``None`` means not installed.
    ``mmpose_bounds`` maps ``"mmcv"``/``"mmengine"`` to the inclusive
    (minimum, maximum) versions that ``import mmpose`` asserts.
    """

    versions: Mapping[str, str | None]
    mmcv_ops: bool = False
    torchvision_error: str | None = None
    mmpose_requires: tuple[str, ...] = ()
    mmpose_bounds: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def version(self, name: str) -> str | None:
        return self.versions.get(name)

    def has(self, name: str) -> bool:
        return self.versions.get(name) is not None

    def mmcv(self) -> tuple[str, str] | None:
        """(distribution, version) of the installed mmcv, if any."""
        for dist in MMCV_DISTRIBUTIONS:
            version = self.versions.get(dist)
            if version is not None:
                return dist, version
        return None

    def opencv(self) -> tuple[str, str] | None:
        for dist in OPENCV_DISTRIBUTIONS:
            version = self.versions.get(dist)
            if version is not None:
                return dist, version
        return None


# ----------------------------------------------------------------------------- versions


def _release(version: str) -> tuple[int, ...]:
    """Leading numeric release of a version string: '2.0.0rc4' -> (2, 0, 0)."""
    parts: list[int] = []
    for piece in version.split("+")[0].split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):  # '0rc4': the release ends here
            break
    return tuple(parts)


def _key(version: str) -> Any:
    """A sort key for a version; packaging's rules when it is there (pre-releases sort low)."""
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - packaging ships with setuptools/mmcv
        return _release(version)
    try:
        return Version(version)
    except InvalidVersion:
        return Version(".".join(map(str, _release(version) or (0,))))


def _at_least(version: str | None, minimum: str) -> bool:
    return version is not None and _key(version) >= _key(minimum)


def _below(version: str | None, bound: str) -> bool:
    return version is not None and _key(version) < _key(bound)


# ----------------------------------------------------------------------------- rules


def _missing_mm(stack: Stack) -> Iterable[Finding]:
    missing = [name for name in ("mmengine", "mmpose") if not stack.has(name)]
    if stack.mmcv() is None:
        missing.insert(1, "mmcv")
    if missing:
        yield Finding(
            Severity.ERROR,
            f"{', '.join(missing)} not installed: the mmpose features (config targets, emit, "
            "the registered adapters) need mmengine, mmcv and mmpose",
            f"{INSTALL_LINE}  (mmpose goes in with --no-deps: its chumpy dependency does not build)",
            "missing-mm",
        )


def _missing_core(stack: Stack) -> Iterable[Finding]:
    missing = [name for name in ADAPTKIT_NEEDS if not stack.has(name)]
    if missing:
        yield Finding(
            Severity.ERROR,
            f"{', '.join(missing)} not installed: adaptkit itself needs them",
            f"pip install {' '.join(missing)}",
            "missing-core",
        )


def _mmpose_runtime_needs(stack: Stack) -> Iterable[Finding]:
    if not stack.has("mmpose"):
        return
    missing = [name for name in MMPOSE_RUNTIME_NEEDS if not stack.has(name)]
    if stack.opencv() is None:
        missing.append("opencv-python")
    if missing:
        yield Finding(
            Severity.ERROR,
            f"mmpose is installed but its runtime needs {', '.join(missing)} are not "
            "(an install with --no-deps leaves them out); registering mmpose's modules imports them",
            f"pip install {' '.join(missing)}  (or: pip install -r requirements/stack.txt)",
            "mmpose-needs",
        )


def _mmcv_one_x(stack: Stack) -> Iterable[Finding]:
    mmcv = stack.mmcv()
    if mmcv is None:
        return
    dist, version = mmcv
    if dist == "mmcv-full" or _below(version, "2.0.0rc0"):
        yield Finding(
            Severity.ERROR,
            f"{dist} {version} is an mmcv 1.x: mmengine and mmpose 1.x need mmcv >= 2.0 "
            "(mmcv.runner, mmcv.utils.Config and friends moved to mmengine)",
            f"pip uninstall -y {dist} && pip install mmcv-lite==2.1.0",
            "mmcv-1x",
        )


def _two_mmcvs(stack: Stack) -> Iterable[Finding]:
    installed = [dist for dist in MMCV_DISTRIBUTIONS if stack.has(dist)]
    if len(installed) > 1:
        yield Finding(
            Severity.WARN,
            f"{' and '.join(installed)} are both installed and share the one 'mmcv' folder; "
            "whichever went in last won, file by file",
            f"pip uninstall -y {' '.join(installed)} && pip install mmcv-lite==2.1.0",
            "two-mmcv",
        )


def _mmpose_needs_ops(stack: Stack) -> Iterable[Finding]:
    if _at_least(stack.version("mmpose"), "1.2.0") and stack.mmcv() is not None and not stack.mmcv_ops:
        yield Finding(
            Severity.ERROR,
            f"mmpose {stack.version('mmpose')} without mmcv's compiled ops: `import mmpose.models` "
            "fails on mmcv.ops.MultiScaleDeformableAttention (EDPose head; from 1.3 also mmdet for RTMO)",
            "pip install --no-deps mmpose==1.1.0  (or build the full mmcv with ops, about 50 minutes on 2 cores)",
            "mmpose-ops",
        )


def _mmpose_bounds(stack: Stack) -> Iterable[Finding]:
    if not stack.has("mmpose"):
        return
    mmcv = stack.mmcv()
    installed = {"mmengine": ("mmengine", stack.version("mmengine"))}
    if mmcv is not None:
        installed["mmcv"] = mmcv
    for package, (low, high) in stack.mmpose_bounds.items():
        dist, version = installed.get(package, (package, None))
        if version is None:
            continue
        if _below(version, low) or _key(version) > _key(high):
            yield Finding(
                Severity.ERROR,
                f"mmpose {stack.version('mmpose')} asserts {low} <= {package} <= {high} on import, "
                f"and {dist} {version} is installed",
                f'pip install "{dist}>={low},<={high}"',
                f"mmpose-{package}-range",
            )


def _numpy_xtcocotools(stack: Stack) -> Iterable[Finding]:
    if stack.has("xtcocotools") and _at_least(stack.version("numpy"), "2"):
        yield Finding(
            Severity.ERROR,
            f"numpy {stack.version('numpy')} with xtcocotools: the xtcocotools wheel is built "
            'against numpy 1.x and fails on import ("numpy.dtype size changed")',
            'pip install "numpy<2" "opencv-python<4.12"',
            "numpy2-xtcocotools",
        )


def _opencv_numpy(stack: Stack) -> Iterable[Finding]:
    opencv = stack.opencv()
    numpy = stack.version("numpy")
    if opencv is not None and numpy is not None and _at_least(opencv[1], "4.12") and _below(numpy, "2"):
        yield Finding(
            Severity.ERROR,
            f"{opencv[0]} {opencv[1]} with numpy {numpy}: opencv 4.12+ wheels need numpy >= 2, so `import cv2` fails",
            f'pip install "{opencv[0]}<4.12"',
            "opencv-numpy1",
        )


def _weights_only_checkpoints(stack: Stack) -> Iterable[Finding]:
    torch_version = stack.version("torch")
    mmengine = stack.version("mmengine")
    if torch_version is not None and mmengine is not None and _at_least(torch_version, "2.6"):
        yield Finding(
            Severity.WARN,
            f"torch {torch_version} loads with weights_only=True by default, and mmengine {mmengine}'s load_checkpoint "
            "does not say otherwise: Runner checkpoints (they hold numpy and logging state) fail in "
            "mmpose.apis.init_model, load_from and resume with 'Weights only load failed'",
            "for checkpoints you made yourself: export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, or save the bare "
            "state_dict (adaptkit's loader reads it with weights_only=True)",
            "torch-weights-only",
        )


def _setuptools_pkg_resources(stack: Stack) -> Iterable[Finding]:
    if stack.has("mmengine") and _at_least(stack.version("setuptools"), "81"):
        yield Finding(
            Severity.ERROR,
            f"setuptools {stack.version('setuptools')} no longer ships pkg_resources, which mmengine "
            'imports to resolve package-scoped configs (_base_ = ["mmpose::..."])',
            'pip install "setuptools<81"',
            "setuptools-81",
        )


def _chumpy(stack: Stack) -> Iterable[Finding]:
    if stack.has("mmpose") and "chumpy" in stack.mmpose_requires and not stack.has("chumpy"):
        yield Finding(
            Severity.OK,
            "mmpose declares chumpy, which is not installed (pip check will say so)",
            "nothing to do: chumpy serves only SMPL body models and does not build; "
            "keep installing mmpose with --no-deps",
            "chumpy",
        )


def _torchvision_import(stack: Stack) -> Iterable[Finding]:
    if stack.torchvision_error is not None:
        yield Finding(
            Severity.ERROR,
            f"torchvision {stack.version('torchvision')} does not import beside torch "
            f"{stack.version('torch')} ({stack.torchvision_error}); mmpose imports torchvision",
            "install the torchvision built for this torch: pip install torch==2.14.1 torchvision==0.29.1 "
            "(PyPI's torchvision does not fit a CPU-only or custom torch build)",
            "torchvision-import",
        )


def _torchvision_pair(stack: Stack) -> Iterable[Finding]:
    torch, vision = stack.version("torch"), stack.version("torchvision")
    if torch is None or vision is None or stack.torchvision_error is not None:
        return
    t, v = _release(torch), _release(vision)
    # torch 2.N pairs with torchvision 0.(N+15): 2.0 <-> 0.15, 2.14 <-> 0.29
    if len(t) >= 2 and len(v) >= 2 and t[0] == 2 and v[0] == 0 and v[1] != t[1] + 15:
        yield Finding(
            Severity.WARN,
            f"torchvision {vision} is not the release made for torch {torch} "
            f"(that is torchvision 0.{t[1] + 15}); its compiled ops may fail at run time",
            f"pip install torchvision==0.{t[1] + 15}.*  (from the same index as torch)",
            "torchvision-pair",
        )


Rule = Callable[[Stack], Iterable[Finding]]

RULES: tuple[Rule, ...] = (
    _missing_core,
    _missing_mm,
    _mmpose_runtime_needs,
    _mmcv_one_x,
    _two_mmcvs,
    _mmpose_needs_ops,
    _mmpose_bounds,
    _numpy_xtcocotools,
    _opencv_numpy,
    _weights_only_checkpoints,
    _setuptools_pkg_resources,
    _torchvision_import,
    _torchvision_pair,
    _chumpy,
)


def diagnose(stack: Stack) -> tuple[Finding, ...]:
    """Run every rule over ``stack``; errors first, then warnings, then notes."""
    findings = [finding for rule in RULES for finding in rule(stack)]
    order = {Severity.ERROR: 0, Severity.WARN: 1, Severity.OK: 2}
    return tuple(sorted(findings, key=lambda f: order[f.severity]))
