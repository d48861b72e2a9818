"""Turn a SOURCE string into a backbone module, the same way for every command.

A SOURCE is a zoo name (``sctnet``), ``timm:NAME`` (a timm model with
``features_only=True``), ``package.module:callable``,
``path/to/file.py:Name``, or an mmpose/mmengine config (a file, or a
``mmpose::`` package-scoped name) whose backbone (and neck) is built.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch.nn as nn

from adaptkit.core.files import read_bytes_bounded, show, user_path, user_path_errors
from adaptkit.errors import AdaptkitError, SourceError, describe_failure, is_user_failure
from adaptkit.zoo import ZOO, build_zoo_model

__all__ = ["resolve_source", "SourceKind", "source_kind", "is_config_source"]


class SourceKind:
    ZOO = "zoo"
    TIMM = "timm"
    CALLABLE = "callable"
    FILE = "file"
    CONFIG = "config"


def is_config_source(source: str) -> bool:
    return "::" in source or (source.endswith(".py") and ":" not in source.replace("\\", "/").split("/")[-1])


def source_kind(source: str) -> str:
    """Which of the four SOURCE forms ``source`` is written in."""
    if is_config_source(source):
        return SourceKind.CONFIG
    target, sep, _ = source.rpartition(":")
    if target == "timm" and not _is_timm_function(source):
        return SourceKind.TIMM
    if sep and (target.endswith(".py") or "/" in target):
        return SourceKind.FILE
    if sep:
        return SourceKind.CALLABLE
    return SourceKind.ZOO


def resolve_source(source: str, /, **kwargs: Any) -> nn.Module:
    """Build the backbone named by ``source``; ``kwargs`` go to its constructor.

    Raises SourceError (or ConfigError for configs) with one line saying what
    is wrong and what to do.
    """
    if not isinstance(source, str) or not source.strip():
        raise SourceError(
            "SOURCE is empty; give a zoo name (sctnet), package.module:callable, file.py:Name or a config"
        )
    source = source.strip()
    kind = source_kind(source)
    if kind == SourceKind.CONFIG:
        if kwargs:
            raise SourceError("--arg does not apply to a config SOURCE; edit the config's backbone instead")
        if "::" not in source:
            _check_config_file(source)
        from adaptkit.mm.openmmlab import build_config_backbone  # reading a config is OpenMMLab integration

        return build_config_backbone(source)
    if kind == SourceKind.ZOO:
        return _from_zoo(source, kwargs)
    if kind == SourceKind.TIMM:
        return _from_timm(source.partition(":")[2], kwargs)
    target, _, attr = source.rpartition(":")
    if kind == SourceKind.FILE:
        module = _import_file(Path(target))
    else:
        module = _import_module(target)
    return _instantiate(_get_attr(module, attr, source), source, kwargs)


def _from_zoo(name: str, kwargs: dict[str, Any]) -> nn.Module:
    if name.lower() not in ZOO:
        close = difflib.get_close_matches(name.lower(), list(ZOO), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise SourceError(
            f"unknown backbone {name!r}; {hint}zoo names are {', '.join(ZOO)}, "
            "or write package.module:callable or path/to/file.py:Name"
        )
    return _instantiate(lambda **kw: build_zoo_model(name, **kw), name, kwargs)


#: timm's own functions stay reachable as callables (``timm:create_model --arg model_name=...``)
_TIMM_FUNCTIONS = ("create_model",)


def _is_timm_function(source: str) -> bool:
    return source.partition(":")[2] in _TIMM_FUNCTIONS


def _from_timm(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """A timm model's feature pyramid (``features_only=True``), never downloading weights.

    ``pretrained`` defaults to False; True is accepted only with a local file
    in ``pretrained_cfg_overlay={'file': PATH}``.
    """
    try:
        import timm
    except ImportError:
        raise SourceError(
            f"timm:{name} needs timm, an optional dependency: pip install timm (or make install)"
        ) from None
    if not name:
        raise SourceError("timm: needs a model name, e.g. timm:resnet18 or timm:convnext_atto")
    if not timm.is_model(name):
        names = timm.list_models()
        close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "timm.list_models() names them all"
        raise SourceError(f"timm has no model {name!r}; {hint}")
    overlay = kwargs.get("pretrained_cfg_overlay")
    if kwargs.get("pretrained") and not (isinstance(overlay, dict) and overlay.get("file")):
        raise SourceError(
            f"timm:{name} with pretrained=True would download weights; adaptkit never downloads: "
            "add --arg \"pretrained_cfg_overlay={'file': 'local.pth'}\" or load a checkpoint with wrap --checkpoint"
        )
    options = {"features_only": True, "pretrained": False, **kwargs}
    return _instantiate(lambda **kw: timm.create_model(name, **kw), f"timm:{name}", options)


def _check_config_file(source: str) -> None:
    """A local ``.py`` SOURCE without ``:Name`` is read as a config; refuse one that is plainly not a config.

    Parsed, never run: a backbone file (classes, no ``model`` or ``_base_``)
    executed as a config would run its module-level code for nothing.
    """
    path = user_path(source, "SOURCE", SourceError)
    with user_path_errors(path, "read SOURCE", SourceError):
        if path.is_dir():
            raise SourceError(f"SOURCE {show(source)} is a folder; name a config file or path/to/file.py:Name")
        if not path.is_file():
            return  # the config loader says it does not exist
        text = read_bytes_bounded(path, _MAX_SOURCE_BYTES, "SOURCE", SourceError, follow=True)
    if text is None:
        return
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return  # the config loader reports the syntax error
    assigned = {
        t.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    defined = [n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
    if defined and not assigned & {"model", "_base_"}:
        raise SourceError(
            f"{show(source)} defines {', '.join(defined[:3])} but no config (no model= or _base_=); "
            f"write {source}:{defined[0]} to build {defined[0]} from it"
        )


#: the largest SOURCE file parsed to tell a config from a backbone file
_MAX_SOURCE_BYTES = 8 << 20


def _import_module(dotted: str) -> Any:
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        raise SourceError(
            f"no module named {exc.name!r} (while importing {dotted!r}); check the name or install it"
        ) from None
    except BaseException as exc:
        if not is_user_failure(exc):
            raise
        raise SourceError(f"importing {dotted!r} failed: {describe_failure(exc)}") from None


def _import_file(path: Path) -> Any:
    path = user_path(path, "SOURCE file", SourceError)
    with user_path_errors(path, "read SOURCE file", SourceError):
        if path.is_dir():
            raise SourceError(f"{show(path)} is a folder, not a Python file; write path/to/file.py:Name")
        if not path.is_file():
            raise SourceError(f"file {show(path)} does not exist")
        if path.suffix != ".py":
            raise SourceError(f"file {show(path)} is not a Python file; write path/to/file.py:Name")
        resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    name = f"adaptkit_user_{resolved.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise SourceError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(resolved.parent))  # let the file import its neighbours
    no_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # never a __pycache__ beside the user's file (or its neighbours)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if not is_user_failure(exc):
            raise
        raise SourceError(f"importing {show(path)} failed: {describe_failure(exc)}") from None
    finally:
        sys.dont_write_bytecode = no_bytecode
        with contextlib.suppress(ValueError):
            sys.path.remove(str(resolved.parent))
    return module


def _get_attr(module: Any, dotted_attr: str, source: str) -> Any:
    obj = module
    for part in dotted_attr.split("."):
        if not part or not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise SourceError(
                f"{source!r}: {getattr(obj, '__name__', type(obj).__name__)!r} has no attribute {part!r}{hint}"
            )
        obj = getattr(obj, part)
    return obj


def _instantiate(factory: Any, source: str, kwargs: dict[str, Any]) -> nn.Module:
    if isinstance(factory, nn.Module):
        if kwargs:
            raise SourceError(f"{source!r} is a module instance, not a constructor; drop the --arg options")
        return factory
    if not callable(factory):
        raise SourceError(
            f"{source!r} is a {type(factory).__name__}, not a module class or a function that returns one"
        )
    try:
        model = factory(**kwargs)
    except AdaptkitError:
        raise
    except TypeError as exc:
        raise SourceError(f"calling {source!r} failed: {exc}; check the --arg names") from None
    except BaseException as exc:
        if not is_user_failure(exc):
            raise
        raise SourceError(f"calling {source!r} failed: {describe_failure(exc)}") from None
    if not isinstance(model, nn.Module):
        raise SourceError(f"{source!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
