"""Which parameters each backbone output depends on.

Two readers. The planner weighs features by the share of the backbone's
weights behind them: ResNet-50's stride-4 map fits an HRNet head exactly
but depends on 1 % of the weights, so layer2-4 would never train. And when
an adapter reads only some outputs (SCTNet's x5, say), the branches that
feed the others get no gradient, and DistributedDataParallel stops with
"Expected to have finished reduction" unless ``find_unused_parameters=True``;
the fragment sets that flag only when it is needed.

Both come from one shape-only trace: a forward on the meta device (no
arithmetic, the model untouched) and one backward per output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.func import functional_call

from adaptkit.core.preserve import model_preserved, swapped
from adaptkit.core.records import ProbeResult
from adaptkit.core.tree import select
from adaptkit.errors import is_user_failure

__all__ = ["ParameterReach", "parameter_reach", "probe_reach", "unreached_parameters"]


@dataclass(frozen=True)
class ParameterReach:
    """Per output path, the trainable parameters whose gradient reaches it.

    ``sizes`` maps every trainable parameter name to its element count.
    """

    sizes: Mapping[str, int]
    reached: Mapping[str, frozenset[str]]

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def names(self, paths: Iterable[str]) -> frozenset[str]:
        """Parameters at least one of ``paths`` depends on."""
        return frozenset().union(*(self.reached[p] for p in paths))

    def share(self, paths: Iterable[str]) -> float:
        """Fraction of the trainable parameter count the outputs at ``paths`` depend on (1 for a weightless model)."""
        total = self.total
        return sum(self.sizes[n] for n in self.names(paths)) / total if total else 1.0


def parameter_reach(model: nn.Module, input_shape: Sequence[int], paths: Sequence[str]) -> ParameterReach | None:
    """What each output at ``paths`` depends on, from one meta trace; None when the trace cannot run."""
    twins: dict[int, torch.Tensor] = {}

    def meta(tensor: torch.Tensor) -> torch.Tensor:
        twin = torch.empty_like(tensor, device="meta")
        if tensor.requires_grad and twin.is_floating_point():
            twin.requires_grad_(True)
        twins[id(tensor)] = twin
        return twin

    tensors = swapped(model, meta)  # every alias name: a reused submodule is never left on meta
    params = {n: p for n, p in model.named_parameters() if p.requires_grad and id(p) in twins}
    wanted = list(dict.fromkeys(paths))
    x = torch.empty(tuple(input_shape), device="meta")
    reached: dict[str, frozenset[str]] = {}
    try:
        with model_preserved(model), torch.enable_grad():
            output = functional_call(model, tensors, (x,), strict=False, tie_weights=False)
            leaves = [twins[id(p)] for p in params.values()]
            for i, path in enumerate(wanted):
                read = select(output, path)
                if not read.requires_grad:
                    reached[path] = frozenset()
                    continue
                grads = torch.autograd.grad(read.sum(), leaves, allow_unused=True, retain_graph=i < len(wanted) - 1)
                reached[path] = frozenset(n for n, g in zip(params, grads, strict=True) if g is not None)
    except BaseException as exc:  # the meta trace is a best effort; the probe reports real failures
        if not is_user_failure(exc):
            raise
        return None
    return ParameterReach(sizes={n: p.numel() for n, p in params.items()}, reached=reached)


def unreached_parameters(model: nn.Module, input_shape: Sequence[int], paths: Sequence[str]) -> tuple[str, ...] | None:
    """Names of trainable parameters that reach none of the outputs at ``paths``; None when unknown."""
    reach = parameter_reach(model, input_shape, paths)
    if reach is None:
        return None
    used = reach.names(dict.fromkeys(paths))
    return tuple(n for n in reach.sizes if n not in used)


def probe_reach(model: nn.Module, result: ProbeResult) -> ParameterReach | None:
    """What each output the probe found depends on, at the probed shape; None when the trace cannot run."""
    return parameter_reach(model, result.input_shape, [f.path for f in result.features])
