"""adaptkit: drop any backbone into an OpenMMLab (mmpose) model.

probe -> plan -> build -> emit / fuse -> bench. Importing adaptkit is light:
mmengine and mmpose are imported only by the functions that need them.
"""

from __future__ import annotations

from adaptkit.core.records import (
    AdapterPlan,
    FeatureSpec,
    InputPlan,
    InputSpec,
    Layout,
    PlanStep,
    ProbeMode,
    ProbeResult,
    Strategy,
    TargetSpec,
)
from adaptkit.errors import (
    AdaptkitError,
    BenchError,
    BuildError,
    CheckpointError,
    ConfigError,
    EmitError,
    FuseError,
    InputShapeError,
    MissingPackageError,
    OptionError,
    PlanError,
    PortError,
    ProbeError,
    ShapeMismatchError,
    SourceError,
    TargetError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "probe",
    "plan",
    "wrap",
    "fuse",
    "resolve_source",
    "parse_target",
    "TraceMode",
    "FeatureSpec",
    "ProbeResult",
    "TargetSpec",
    "InputSpec",
    "AdapterPlan",
    "InputPlan",
    "PlanStep",
    "Layout",
    "ProbeMode",
    "Strategy",
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
]

_LAZY = {
    "probe": ("core.probing", "probe"),
    "plan": ("api", "plan"),
    "wrap": ("api", "wrap"),
    "fuse": ("core.fusion", "fuse"),
    "resolve_source": ("sources", "resolve_source"),
    "parse_target": ("api", "parse_target"),
    "TraceMode": ("core.probing", "TraceMode"),
}


def __getattr__(name: str):  # keeps `import adaptkit` free of torch-heavy stage imports
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module_name}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'adaptkit' has no attribute {name!r}")
