"""Why a probe failed, in one line that names the module on the failing call stack."""

from __future__ import annotations

import re

import torch.nn as nn

from adaptkit.core.layouts import Shape
from adaptkit.errors import ProbeError

__all__ = ["module_names", "crash_site", "crash_error", "meta_error", "meta_reason"]


def module_names(model: nn.Module) -> dict[int, str]:
    names: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), name)
    return names


def crash_site(exc: BaseException, names: dict[int, str]) -> tuple[str, str] | None:
    """(qualified name, class) of the innermost model module on the failing call stack."""
    error: BaseException | None = exc
    for _ in range(8):  # the error, then what it was raised from
        if error is None:
            break
        site = None
        tb = error.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names:
                site = (names[id(owner)], type(owner).__name__)
            tb = tb.tb_next
        if site is not None:
            return site
        error = error.__cause__ or error.__context__
    return None


def _root_message(exc: BaseException) -> str:
    """The original one-line message (torchinfo wraps the model's error in its own)."""
    while exc.__cause__ is not None and "torchinfo" in str(exc):
        exc = exc.__cause__
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _where(site: tuple[str, str] | None) -> str:
    if site is None:
        return ""
    name, cls = site
    return f"in module {name!r} ({cls})" if name else f"in the top-level forward ({cls})"


_CRASH_HINTS: tuple[tuple[str, str], ...] = (
    (
        r"Expected more than 1 value per channel when training",
        "a normalisation in training mode needs 2 or more values per channel: probe a batch of 2 or more "
        "(2xCxHxW), or a model in eval mode",
    ),
)


def crash_error(exc: BaseException, site: tuple[str, str] | None, shape: Shape) -> ProbeError:
    where = _where(site)
    raw = _root_message(exc)
    message = _shorten(raw, 400)
    at = "x".join(str(d) for d in shape)
    text = (
        f"backbone crashed {where} at input {at}: {message}" if where else f"backbone crashed at input {at}: {message}"
    )
    hint = _first_match(_CRASH_HINTS, raw)
    if hint:
        text = f"{text}; {hint}"
    return ProbeError(text, module=site[0] if site else None)


def meta_error(exc: BaseException, site: tuple[str, str] | None) -> ProbeError:
    """A failed meta trace when the caller asked for meta only: the reason, and what to try instead."""
    advice = _first_match(_CRASH_HINTS, _root_message(exc)) or "probe with mode='auto' or 'real' to run real tensors"
    return ProbeError(f"the meta trace failed {meta_reason(exc, site)}; {advice}", module=site[0] if site else None)


_META_REASONS: tuple[tuple[str, str], ...] = (
    (r"item\(\) cannot be called on meta", "calls .item() on a tensor"),
    (r"torch\.nonzero\(\)|aten::nonzero", "uses a data-dependent op (nonzero / boolean-mask indexing)"),
    (r"Cannot copy out of meta tensor", "reads tensor values (.tolist(), .cpu())"),
    (r"to numpy", "converts a tensor to numpy"),
    (r"not on the expected device", "mixes real tensors that are not parameters or buffers with the input"),
)


def meta_reason(exc: BaseException, site: tuple[str, str] | None) -> str:
    """A short reason why the meta trace stopped, for ``ProbeResult.fallback_reason``."""
    message = _root_message(exc)
    reason = _first_match(_META_REASONS, message)
    if reason is None:
        op = re.search(r"(aten::\w+).*(?:Meta|meta)", message)
        reason = f"op {op.group(1)} has no meta kernel" if op else _shorten(message.split(". ")[0], 120)
    where = _where(site)
    return f"{where}: {reason}" if where else reason


def _first_match(table: tuple[tuple[str, str], ...], message: str) -> str | None:
    """The words of the first (pattern, words) row whose pattern occurs in ``message``."""
    return next((words for pattern, words in table if re.search(pattern, message)), None)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
