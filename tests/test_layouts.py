"""The layout table is what every stage reads: each map row is recognised by the probe and undone by the adapter."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from einops import rearrange

import adaptkit
from adaptkit.core.adapter import ShapeAdapter
from adaptkit.core.layouts import LAYOUTS, layout_info
from adaptkit.core.records import Layout

MAP_ROWS = [row for row in LAYOUTS.values() if row.is_map]


class EmitsLayout(nn.Module):
    """A stride-8 NCHW map, returned in ``layout`` (tokens get one class token in front)."""

    def __init__(self, layout: Layout, channels: int = 5) -> None:
        super().__init__()
        self.layout = layout
        self.conv = nn.Conv2d(3, channels, kernel_size=8, stride=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.layout is Layout.NHWC:
            return rearrange(y, "b c h w -> b h w c")
        if self.layout is Layout.NLC:
            tokens = rearrange(y, "b c h w -> b (h w) c")
            return torch.cat([tokens[:, :1] * 0, tokens], dim=1)
        return y


def test_every_layout_has_one_row_and_map_rows_say_how_to_reach_nchw():
    assert set(LAYOUTS) == set(Layout)
    for row in MAP_ROWS:
        assert row.rank is not None and row.channel_axis is not None and row.spatial_axes
        assert (row.to_nchw is None) == (row.layout is Layout.NCHW)
    assert not layout_info(Layout.OTHER).is_map


@pytest.mark.parametrize("row", MAP_ROWS, ids=lambda r: r.layout.value)
def test_probe_recognises_each_row_and_the_adapter_undoes_it(row):
    torch.manual_seed(0)
    model = EmitsLayout(row.layout).eval()
    (feature,) = adaptkit.probe(model, (1, 3, 64, 48)).features
    assert feature.layout is row.layout
    assert feature.channels == 5 and feature.stride == (8, 8) and feature.spatial == (8, 6)
    assert len(feature.shape) == row.rank
    adapter = ShapeAdapter(
        select="",
        in_channels=5,
        feature_stride=(8, 8),
        target_stride=(8, 8),
        layout=row.layout.value,
        prefix_tokens=feature.prefix_tokens,
        grid=list(feature.spatial) if row.needs_grid else None,
    )
    x = torch.randn(2, 3, 64, 48)
    (out,) = adapter(model(x), input_hw=(64, 48))
    assert torch.equal(out, model.conv(x))
