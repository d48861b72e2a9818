"""Load foreign checkpoints (mmseg, mmdet, timm, DDP-saved...) into a model, or refuse cleanly.

Checkpoints from other codebases nest the weights (``state_dict``, ``model``, ``module``)
and prefix the keys (``backbone.``, ``module.``, ``module.backbone.``), while the model
may be a wrapper with a prefix of its own (``body.``). :func:`match_keys` finds the one
prefix change that matches the most keys; :func:`load_checkpoint` validates the whole
load before copying anything, so a refused load leaves the model untouched.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from adaptkit.core.files import user_path
from adaptkit.errors import CheckpointError

__all__ = ["LoadReport", "read_state_dict", "match_keys", "load_checkpoint", "check_checkpoint_path"]

#: where checkpoints commonly keep their weights, searched in this order before the top level
STATE_DICT_KEYS = ("state_dict", "model", "module")
#: how many leading key components a prefix may span (``module.backbone.`` is two)
MAX_PREFIX_DEPTH = 4


@dataclass(frozen=True)
class LoadReport:
    """What a checkpoint load did, key by key (model-side names).

    ``ignored`` lists checkpoint keys outside the stripped prefix (e.g. ``decode_head.*``
    when ``backbone.`` was stripped): they belong to other parts of the saved model.
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    source_key: str
    prefix_stripped: str
    prefix_added: str
    ignored: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every model key was loaded and every in-scope checkpoint key was used."""
        return not (self.missing or self.unexpected or self.mismatched)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0].split(". ")[0] if text else ""
    first = first if len(first) <= 160 else first[:157] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _numpy_safe_globals() -> list[Any]:
    """numpy scalars/arrays that mmcv and mmengine write into checkpoint ``meta``; safe to rebuild.

    Listed under their numpy 1.x pickle names too, so old checkpoints read under numpy 2.
    """
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch in practice
        return []
    import importlib

    multiarray = importlib.import_module(
        "numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core.multiarray"
    )
    found: list[Any] = [np.dtype, np.ndarray]
    found += [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    for name in ("scalar", "_reconstruct"):
        obj = getattr(multiarray, name)
        found += [obj, (obj, f"numpy.core.multiarray.{name}"), (obj, f"numpy._core.multiarray.{name}")]
    return found


def check_checkpoint_path(path: str | os.PathLike[str], what: str = "checkpoint") -> Path:
    """``path`` names a non-empty regular file; CheckpointError saying what it is otherwise."""
    from adaptkit.core.files import user_path, user_path_errors

    checked = user_path(path, what, CheckpointError)
    with user_path_errors(checked, f"read {what}", CheckpointError):
        if not checked.exists():
            raise CheckpointError(f"{what} {str(checked)!r} does not exist; check the path")
        if checked.is_dir():
            raise CheckpointError(
                f"{what} path is not a file but a folder: {checked}; point at the .pth/.pt file itself"
            )
        if not checked.is_file():
            raise CheckpointError(f"{what} path is not a regular file: {checked}; point at the .pth/.pt file itself")
        if checked.stat().st_size == 0:
            raise CheckpointError(f"{what} {checked} is empty (0 bytes); was it saved completely?")
    return checked


def _load_file(path: Path) -> Any:
    path = check_checkpoint_path(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about legacy formats; the error below says it all
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if refused is None:
            raise CheckpointError(
                f"checkpoint {path} is corrupt or not a PyTorch file: unreadable pickle data"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} holds a {refused.group(1)} object, which weights_only loading refuses; "
            "re-save the weights alone (torch.save(model.state_dict(), path))"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a PyTorch file: {_one_line(exc)}") from None


def _tensors_of(obj: Any) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        return {}
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_state_dict(
    path_or_obj: str | os.PathLike[str] | Mapping[str, Any] | nn.Module,
) -> tuple[dict[str, torch.Tensor], str]:
    """Return ``(state_dict, source_key)`` from a checkpoint file or an already loaded object.

    ``source_key`` names the top-level entry that held the tensors (``state_dict``,
    ``model``, ``module``) or is ``""`` when they sit at the top level. Files are read
    with ``weights_only=True`` onto the CPU.
    """
    if isinstance(path_or_obj, nn.Module):
        where = f"the {type(path_or_obj).__name__} state dict"
        obj: Any = path_or_obj.state_dict()
    elif isinstance(path_or_obj, Mapping):
        where = "the checkpoint object"
        obj = path_or_obj
    elif isinstance(path_or_obj, (str, os.PathLike)):
        path = user_path(path_or_obj, "checkpoint", CheckpointError)
        where = f"checkpoint {path}"
        obj = _load_file(path)
    else:
        raise CheckpointError(
            f"cannot read a checkpoint from a {type(path_or_obj).__name__}; pass a file path or a state dict"
        )
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            tensors = _tensors_of(obj.get(key))
            if tensors:
                return tensors, key
        tensors = _tensors_of(obj)
        if tensors:
            return tensors, ""
    raise CheckpointError(
        f"{where} holds no tensors (looked under {', '.join(STATE_DICT_KEYS)} and the top level); is it a weights file?"
    )


def _prefix_splits(key: str) -> Iterable[tuple[str, str]]:
    """``(prefix, rest)`` pairs at dot boundaries, from the empty prefix up to MAX_PREFIX_DEPTH parts."""
    yield "", key
    start = 0
    for _ in range(MAX_PREFIX_DEPTH):
        dot = key.find(".", start)
        if dot < 0 or dot == len(key) - 1:
            return
        yield key[: dot + 1], key[dot + 1 :]
        start = dot + 1


def match_keys(state: Mapping[str, Any], model_keys: Iterable[str]) -> tuple[dict[str, str], str, str]:
    """Map checkpoint keys to model keys through the prefix change that matches the most keys.

    Every (strip ``p`` from checkpoint keys, add ``q`` to them) pair is scored by how many
    checkpoint keys it turns into model keys; identity and shorter changes win ties.
    Returns ``(mapping checkpoint key -> model key, p, q)``.
    """
    model_set = set(model_keys)
    model_prefixes: dict[str, set[str]] = {}  # rest of a model key -> prefixes it appears under
    for key in model_set:
        for prefix, rest in _prefix_splits(key):
            model_prefixes.setdefault(rest, set()).add(prefix)
    votes: Counter[tuple[str, str]] = Counter()
    for key in state:
        for strip, rest in _prefix_splits(key):
            for add in model_prefixes.get(rest, ()):
                votes[(strip, add)] += 1
    if not votes:
        return {}, "", ""
    strip, add = max(votes, key=lambda pair: (votes[pair], -len(pair[0]) - len(pair[1])))
    renamed = {key: add + key[len(strip) :] for key in state if key.startswith(strip)}
    return {key: new for key, new in renamed.items() if new in model_set}, strip, add


def load_checkpoint(
    model: nn.Module,
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    *,
    strict: bool = False,
    allow_partial: bool = False,
) -> LoadReport:
    """Load a (foreign) checkpoint into ``model`` and report what went where.

    Shape-mismatched tensors are never loaded. A load with missing or
    mismatched keys (or, when ``strict``, unexpected ones) is refused with
    :class:`CheckpointError` naming the keys, before any tensor is copied,
    unless ``allow_partial`` accepts it; then whatever fits is loaded. Extra
    checkpoint keys (a classifier's ``fc.*``) are reported, not refused. A
    missing ``num_batches_tracked`` is not a missing weight (torch starts it
    at 0). Tensors that cannot stand for the model's (complex, bool or
    integer into floating point, sparse, meta) are always refused.
    """
    state, source_key = read_state_dict(checkpoint)
    target = model.state_dict()
    mapping, strip, add = match_keys(state, target)

    ignored = tuple(k for k in state if strip and not k.startswith(strip))
    unexpected = tuple(k for k in state if k not in mapping and k.startswith(strip))
    loaded: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    to_load: dict[str, torch.Tensor] = {}
    for ckpt_key, model_key in mapping.items():
        have, want = tuple(state[ckpt_key].shape), tuple(target[model_key].shape)
        if have != want:
            mismatched.append((model_key, have, want))
            continue
        to_load[model_key] = state[ckpt_key]
        loaded.append(model_key)
    mismatched_keys = {key for key, _, _ in mismatched}
    missing = tuple(
        k for k in target if k not in to_load and k not in mismatched_keys and not k.endswith("num_batches_tracked")
    )
    odd = [
        f"{key} ({_kind(tensor)} for {_kind(target[key])})"
        for key, tensor in to_load.items()
        if not _fits(tensor, target[key])
    ]

    report = LoadReport(
        loaded=tuple(loaded),
        missing=missing,
        unexpected=unexpected,
        mismatched=tuple(mismatched),
        source_key=source_key,
        prefix_stripped=strip,
        prefix_added=add,
        ignored=ignored,
    )
    where = f"checkpoint {checkpoint}" if isinstance(checkpoint, (str, os.PathLike)) else "the checkpoint"
    if odd:
        raise CheckpointError(
            f"{where} holds {len(odd)} tensor(s) of a kind {type(model).__name__} cannot take: {_first(odd)}; "
            "re-save them as dense floating-point weights"
        )
    problems = len(report.missing) + len(report.mismatched) + (len(report.unexpected) if strict else 0)
    if problems and not allow_partial:
        named = [
            ("missing", list(report.missing)),
            ("shape-mismatched", [f"{k} {list(a)} vs {list(b)}" for k, a, b in report.mismatched]),
            ("unexpected", list(report.unexpected) if strict else []),
        ]
        raise CheckpointError(
            f"{where} does not fit {type(model).__name__}: {len(report.missing)} missing, "
            f"{len(report.unexpected)} unexpected, {len(report.mismatched)} shape-mismatched keys "
            f"({len(report.loaded)} would load); pass allow_partial=True (or --allow-partial) to accept a partial load; "
            + "; ".join(f"{name}: {_first(keys)}" for name, keys in named if keys)
        )
    try:
        model.load_state_dict(to_load, strict=False)  # every key is a model key; missing ones were reported
    except RuntimeError as exc:
        raise CheckpointError(f"{where} cannot be loaded into {type(model).__name__}: {_one_line(exc)}") from None
    return report


def _first(keys: list[str], count: int = 3) -> str:
    return ", ".join(keys[:count]) + (f" and {len(keys) - count} more" if len(keys) > count else "")


def _kind(tensor: torch.Tensor) -> str:
    layout = "" if tensor.layout == torch.strided else f"{str(tensor.layout).removeprefix('torch.')} "
    device = "meta " if tensor.is_meta else ""
    return f"{device}{layout}{str(tensor.dtype).removeprefix('torch.')}"


def _fits(tensor: torch.Tensor, like: torch.Tensor) -> bool:
    """Whether ``tensor`` can be copied into ``like`` without losing what it means."""
    if tensor.layout != torch.strided or tensor.is_meta or tensor.is_quantized:
        return False
    have, want = tensor.dtype, like.dtype
    if have.is_complex or want.is_complex:
        return have.is_complex == want.is_complex
    if have == torch.bool or want == torch.bool:
        return have == want
    return have.is_floating_point == want.is_floating_point
