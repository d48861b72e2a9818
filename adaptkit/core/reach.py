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

from adaptkit.core.preserve import model_preserved, swapped
from adaptkit.core.tree import select
from adaptkit.errors import is_user_failure

__all__ = ["unreached_parameters"]


def unreached_parameters(model: nn.Module, input_shape: Sequence[int], paths: Sequence[str]) -> tuple[str, ...] | None:
    """Names of trainable parameters that reach none of the outputs at ``paths``.

    One trace on the meta device (no arithmetic, the model untouched), one
    backward from the sum of the read outputs. Returns None when the meta
    trace cannot run; then nothing is known.
    """
    twins: dict[int, torch.Tensor] = {}

    def meta(tensor: torch.Tensor) -> torch.Tensor:
        twin = torch.empty_like(tensor, device="meta")
        if tensor.requires_grad and twin.is_floating_point():
            twin.requires_grad_(True)
        twins[id(tensor)] = twin
        return twin

    tensors = swapped(model, meta)  # every alias name: a reused submodule is never left on meta
    params = {n: p for n, p in model.named_parameters() if p.requires_grad and id(p) in twins}
    x = torch.empty(tuple(input_shape), device="meta")
    try:
        with model_preserved(model), torch.enable_grad():
            output = functional_call(model, tensors, (x,), strict=False, tie_weights=False)
            read = torch.stack([select(output, path).sum() for path in dict.fromkeys(paths)]).sum()
            grads = torch.autograd.grad(read, [twins[id(p)] for p in params.values()], allow_unused=True)
    except BaseException as exc:  # the meta trace is a best effort; the probe reports real failures
        if not is_user_failure(exc):
            raise
        return None
    return tuple(n for n, g in zip(params, grads, strict=True) if g is None)
