"""A small four-stage pyramid (c2..c5 by name), importable as a SOURCE file by the CLI tests."""

from __future__ import annotations

import torch
import torch.nn as nn


class Pyramid(nn.Module):
    """Four stages, each wider than the last, returning c2..c5 by name (a small ResNet's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(8, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.layer3 = nn.Sequential(nn.Conv2d(32, 96, 3, 2, 1), nn.BatchNorm2d(96), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(96, 192, 3, 2, 1), nn.BatchNorm2d(192), nn.ReLU())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c2 = self.stem(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": self.layer4(c4)}
