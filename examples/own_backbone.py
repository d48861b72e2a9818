"""Your own backbone file, wrapped from the command line with no edit to mmpose.

`MyBackbone` below stands for any model in a file of yours. One command
writes the fragment; mmpose's registry builds it through adaptkit's
`ForeignBackbone`, which imports this file by path:

    .venv/bin/adaptkit probe examples/own_backbone.py:MyBackbone --input 2x3x256x192
    .venv/bin/adaptkit wrap examples/own_backbone.py:MyBackbone --arg width=48 \
        --target mmpose::body_2d_keypoint/topdown_heatmap/crowdpose/td-hm_res50_8xb64-210e_crowdpose-256x192.py \
        --out my_fragment.py

or run this file to do both and train one epoch on synthetic data:

    .venv/bin/python examples/own_backbone.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch.nn as nn

CROWDPOSE = "mmpose::body_2d_keypoint/topdown_heatmap/crowdpose/td-hm_res50_8xb64-210e_crowdpose-256x192.py"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MyBackbone(nn.Module):
    """Five stride-2 stages; returns the last three maps as a list, as many detection backbones do."""

    def __init__(self, width: int = 32):
        super().__init__()
        widths = [width * 2**i for i in range(5)]
        self.stages = nn.ModuleList(_block(cin, cout) for cin, cout in zip([3] + widths[:-1], widths, strict=True))

    def forward(self, x):
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[2:]


def main() -> None:
    from adaptkit.cli import main as adaptkit
    from adaptkit.mm.synthetic import train_smoke

    source = f"{Path(__file__).resolve()}:MyBackbone"
    work = Path(tempfile.mkdtemp(prefix="adaptkit-own-"))
    fragment = work / "my_fragment.py"
    for argv in (
        ["probe", source, "--arg", "width=48", "--input", "2x3x256x192"],
        ["wrap", source, "--arg", "width=48", "--target", CROWDPOSE, "--out", str(fragment)],
    ):
        if adaptkit(argv):
            raise SystemExit(2)
    train_smoke(fragment, work / "train", num_images=2, batch_size=2)
    print(f"trained one epoch: {work / 'train' / 'weights.pth'}")


if __name__ == "__main__":
    main()
