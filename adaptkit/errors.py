"""One exception family for every stage.

Each error is raised with one line that says what is wrong and what to do;
the CLI prints that line and exits with code 2. Catch ``AdaptkitError`` to
handle them all.
"""

from __future__ import annotations

__all__ = [
    "AdaptkitError",
    "InputShapeError",
    "OptionError",
    "SourceError",
    "ProbeError",
    "TargetError",
    "PlanError",
    "BuildError",
    "EmitError",
    "FuseError",
    "CheckpointError",
    "ConfigError",
    "MissingPackageError",
    "BenchError",
    "PortError",
    "ShapeMismatchError",
    "Terminated",
    "UnusedBackboneWarning",
    "describe_failure",
    "is_user_failure",
]


class AdaptkitError(Exception):
    """Root of every error adaptkit raises on purpose."""


class InputShapeError(AdaptkitError, ValueError):
    """A malformed input shape such as ``2x3x640`` or ``2x3x0x640``."""


class OptionError(AdaptkitError, ValueError):
    """An option value adaptkit does not know (a probe mode, a device name...)."""


class SourceError(AdaptkitError, LookupError):
    """A backbone source that cannot be resolved (unknown name, missing file...)."""


class ProbeError(AdaptkitError, RuntimeError):
    """The backbone could not be run on a dummy input; names the failing module."""

    def __init__(self, message: str, module: str | None = None) -> None:
        super().__init__(message)
        self.module = module


class TargetError(AdaptkitError, ValueError):
    """A target (spec string, config, head) that cannot be read."""


class PlanError(AdaptkitError, ValueError):
    """No adapter can turn the backbone's features into what the target needs."""


class BuildError(AdaptkitError, ValueError):
    """An adapter or model cannot be built from the given plan or config."""


class EmitError(AdaptkitError, OSError):
    """A config fragment cannot be written (file exists, folder missing...)."""


class FuseError(AdaptkitError, ValueError):
    """A model that cannot be fused exactly; the model is left untouched."""


class CheckpointError(AdaptkitError, ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


class ConfigError(AdaptkitError, ValueError):
    """An mmengine/mmpose config that cannot be read or built."""


class MissingPackageError(ConfigError):
    """A config part whose class lives in a package this install lacks (mmdet, mmpretrain, full mmcv)."""

    def __init__(self, message: str, package: str = "") -> None:
        super().__init__(message)
        self.package = package  # what to install, in words


class BenchError(AdaptkitError, ValueError):
    """A benchmark request that cannot be run (unknown device, bad batch list)."""


class PortError(AdaptkitError, ValueError):
    """A port check target that is missing or not Python source."""


class ShapeMismatchError(AdaptkitError, RuntimeError):
    """A tensor reached a built adapter with a shape its plan cannot take (at run time, not at planning)."""


class UnusedBackboneWarning(UserWarning):
    """The planned adapter reads features that leave most of the backbone's parameters untrained."""


class Terminated(BaseException):
    """SIGTERM arrived while adaptkit held a temporary file; raised so cleanup runs."""

    def __init__(self, signum: int = 15) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def is_user_failure(exc: BaseException) -> bool:
    """Whether user code (a SOURCE import, a factory, a forward, a config) failed, ``sys.exit`` included.

    Ctrl-C and SIGTERM are the user stopping adaptkit, not a failure to report.
    """
    return not isinstance(exc, (KeyboardInterrupt, Terminated))


def describe_failure(exc: BaseException) -> str:
    """One line for an exception raised by user code, ``sys.exit`` included."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
