"""Backbones that ship with adaptkit, by the names the CLI accepts."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

__all__ = ["ZOO", "zoo_names", "build_zoo_model"]


def _sctnet_s(**kwargs: object) -> nn.Module:
    from adaptkit.zoo.sctnet import sctnet_s

    return sctnet_s(**kwargs)


def _sctnet_b(**kwargs: object) -> nn.Module:
    from adaptkit.zoo.sctnet import sctnet_b

    return sctnet_b(**kwargs)


#: zoo name -> constructor; ``sctnet`` is SCTNet-B, the variant most papers report.
ZOO: dict[str, Callable[..., nn.Module]] = {
    "sctnet": _sctnet_b,
    "sctnet-b": _sctnet_b,
    "sctnet-s": _sctnet_s,
}


def zoo_names() -> tuple[str, ...]:
    return tuple(ZOO)


def build_zoo_model(name: str, **kwargs: object) -> nn.Module:
    return ZOO[name.lower()](**kwargs)
