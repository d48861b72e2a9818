"""The one place adaptkit touches mmengine and mmpose.

Everything here imports them lazily, so ``import adaptkit`` and the probe
stay light, and keeps their import-time chatter (mmcv-lite's
MultiScaleDeformableAttention warning, pkg_resources deprecation) out of
adaptkit's output.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from adaptkit.core.emitting import PLUGIN_MODULE
from adaptkit.errors import ConfigError, MissingPackageError

__all__ = [
    "quiet",
    "ensure_mmpose",
    "config_path",
    "load_config",
    "build_model",
    "PACKAGE_SCOPES",
    "PLUGIN_MODULE",
    "ConfigBackbone",
    "build_config_backbone",
]

#: packages whose configs can be named as ``PACKAGE::relative/path.py``
PACKAGE_SCOPES = ("mmpose", "mmdet", "mmseg", "mmpretrain")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence warnings, stdout chatter and mmengine's logger for a block."""
    logger = logging.getLogger("mmengine")
    old_level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(old_level)


_READY = False


def ensure_mmpose() -> Any:
    """Import mmpose, register its modules and adaptkit's; return mmpose's MODELS."""
    global _READY
    with quiet():
        try:
            import mmpose.models  # noqa: F401  (fills the registry)
            from mmpose.registry import MODELS
            from mmpose.utils import register_all_modules
        except ImportError as exc:
            raise ConfigError(
                f"mmpose cannot be imported ({exc}); install the stack from the README or run 'adaptkit doctor'"
            ) from None
        if not _READY:
            register_all_modules(init_default_scope=False)
            importlib.import_module(PLUGIN_MODULE)
            _READY = True
    return MODELS


def _package_root(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(f"config scope {package!r} names a package that is not installed; install {package} first")
    return Path(spec.origin).parent


def config_path(name: str | Path) -> Path:
    """A config file path from a path or a ``mmpose::relative/path.py`` name.

    Raises ConfigError when the file does not exist.
    """
    text = str(name)
    scope, sep, rel = text.partition("::")
    if sep:
        if scope not in PACKAGE_SCOPES:
            raise ConfigError(f"unknown config scope {scope!r} in {text!r}; use one of: {', '.join(PACKAGE_SCOPES)}")
        root = _package_root(scope)
        path = root / ".mim" / "configs" / rel
        if not path.is_file():
            path = root.parent / "configs" / rel  # a source checkout keeps configs beside the package
        if not path.is_file():
            raise ConfigError(
                f"config {text!r} is not in the installed {scope}; check the name under {root / '.mim' / 'configs'}"
            )
        return path
    from adaptkit.core.files import show, user_path, user_path_errors

    path = user_path(text, "config file", ConfigError)
    with user_path_errors(path, "read config", ConfigError):
        if path.is_dir():
            raise ConfigError(f"config {show(text)} is a folder; give the config file itself")
        if not path.is_file():
            raise ConfigError(f"config file {show(text)} does not exist")
    return path


def package_scoped_name(path: Path) -> str | None:
    """``.../mmpose/.mim/configs/x/y.py`` -> ``mmpose::x/y.py``; None for other files."""
    parts = path.resolve().parts
    if ".mim" in parts:
        i = parts.index(".mim")
        if i >= 1 and parts[i + 1 : i + 2] == ("configs",) and parts[i - 1] in PACKAGE_SCOPES:
            return f"{parts[i - 1]}::{'/'.join(parts[i + 2 :])}"
    return None


def load_config(name: str | Path) -> Any:
    """Load an mmengine Config; ConfigError names the file and the cause."""
    path = config_path(name)
    with quiet():
        from mmengine.config import Config

        try:
            return Config.fromfile(str(path))
        except BaseException as exc:  # mmengine raises many types for a bad file; user code may sys.exit
            from adaptkit.errors import describe_failure, is_user_failure

            if not is_user_failure(exc):
                raise
            if isinstance(exc, SystemExit):
                cause = f"the config {describe_failure(exc)[3:]}"
            else:
                cause = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError(f"cannot read config {str(name)!r}: {cause}") from None


def _drop_init_cfg(cfg: Any) -> Any:
    """A copy of a model config with every ``init_cfg`` removed (no downloads)."""
    if isinstance(cfg, dict):
        return {k: _drop_init_cfg(v) for k, v in cfg.items() if k != "init_cfg"}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_drop_init_cfg(v) for v in cfg)
    return cfg


#: registry names that live outside mmpose, and the package that provides them
_FOREIGN_TYPES = {
    "CSPNeXt": "mmdet",
    "DeformConv2d": "full mmcv (with compiled ops; mmcv-lite has none)",
    "mmcv.ops": "full mmcv (with compiled ops; mmcv-lite has none)",
    "mmcv._ext": "full mmcv (with compiled ops; mmcv-lite has none)",
    "mmpretrain.": "mmpretrain",
    "mmcls.": "mmpretrain (the successor of mmcls)",
    "mmdet.": "mmdet",
}


def _missing_package(cfg: Any, cause: str) -> str | None:
    """The package a config part needs but this install lacks, when the failure ``cause`` says so."""
    text = f"{cfg.get('type', '') if isinstance(cfg, Mapping) else ''} {cause}"
    return next((package for marker, package in _FOREIGN_TYPES.items() if marker in text), None)


def build_model(cfg: Any, *, keep_init_cfg: bool = False) -> Any:
    """Build a model (or part) from a config dict with mmpose's MODELS."""
    from adaptkit.mm.config_values import config_section

    registry = ensure_mmpose()
    plain = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(config_section(cfg, "section to build"))
    if not keep_init_cfg:
        plain = _drop_init_cfg(plain)
    with quiet():
        from mmengine.registry import init_default_scope

        init_default_scope("mmpose")
        try:
            return registry.build(plain)
        except BaseException as exc:  # a registered class is user code: it may sys.exit
            from adaptkit.errors import describe_failure, is_user_failure

            if not is_user_failure(exc):
                raise
            cause = describe_failure(exc) if isinstance(exc, SystemExit) else " ".join(str(exc).split())
            cause = cause or type(exc).__name__
            what = f"cannot build {plain.get('type', 'model')!r} from the config"
            package = _missing_package(plain, cause)
            if package is not None:  # a registry miss says nothing of the package to install
                raise MissingPackageError(f"{what}: it needs {package}, which is not installed", package) from None
            raise ConfigError(f"{what}: {cause}") from None


class ConfigBackbone(nn.Module):
    """A config's backbone followed by its neck, as the estimator runs them."""

    def __init__(self, backbone: nn.Module, neck: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck

    def forward(self, x: Any) -> Any:
        feats = self.backbone(x)
        return self.neck(feats) if self.neck is not None else feats


def build_config_backbone(source: str) -> ConfigBackbone:
    """A config's backbone and neck, built as one module (a config given as a SOURCE).

    A pooling neck (``KEPT_NECKS``) is left out: it stays after the adapter.
    """
    cfg = load_config(source)
    model_cfg = cfg.get("model")
    if not isinstance(model_cfg, Mapping) or "backbone" not in model_cfg:
        raise ConfigError(f"config {source!r} has no model.backbone to probe")
    from adaptkit.mm.config_values import config_section
    from adaptkit.mm.head_readers import KEPT_NECKS

    backbone_cfg = config_section(model_cfg["backbone"], "model.backbone")
    neck_cfg = model_cfg.get("neck")
    if neck_cfg is not None:  # both sections checked before anything is built
        neck_cfg = config_section(neck_cfg, "model.neck")
    backbone = build_model(backbone_cfg)
    # a pooling neck stays in the estimator after any adapter: the maps before it are what gets adapted
    keep = neck_cfg and neck_cfg.get("type") not in KEPT_NECKS
    return ConfigBackbone(backbone, build_model(neck_cfg) if keep else None)
