"""Which parameters a selected output depends on.

When an adapter reads one output of a multi-output backbone (SCTNet's x5,
say), the branches that feed only the other outputs get no gradient, and
DistributedDataParallel stops with "Expected to have finished reduction"
unless ``find_unused_parameters=True``. The fragment sets that flag only
when it is needed, from this shape-only check.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call

from adaptkit.core.tree import select

__all__ = ["unreached_parameters"]


def unreached_parameters(model: nn.Module, input_shape: Sequence[int], paths: Sequence[str]) -> tuple[str, ...] | None:
    """Names of trainable parameters that reach none of the outputs at ``paths``.

    One trace on the meta device (no arithmetic, the model untouched), one
    backward from the sum of the read outputs. Returns None when the meta
    trace cannot run; then nothing is known.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    meta = {n: torch.empty_like(p, device="meta").requires_grad_(True) for n, p in params.items()}
    meta.update({n: torch.empty_like(b, device="meta") for n, b in model.named_buffers()})
    x = torch.empty(tuple(input_shape), device="meta")
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            output = functional_call(model, meta, (x,), strict=False)
            read = torch.stack([select(output, path).sum() for path in dict.fromkeys(paths)]).sum()
            grads = torch.autograd.grad(read, [meta[n] for n in params], allow_unused=True)
    except Exception:  # the meta trace is a best effort; the probe reports real failures
        return None
    return tuple(n for n, g in zip(params, grads, strict=True) if g is None)
