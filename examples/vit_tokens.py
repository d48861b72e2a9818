"""A ViT-style backbone that returns tokens (B, 1 + N, C) into the stock HRNet config.

The probe tells tokens from maps by probing two input sizes: N grows with
the image, C does not, and N = prefix + (H/s)(W/s) gives one class token
at stride 16. The adapter drops the class token, lays the tokens out as a
16x12 map (einops), projects 192 -> 32 channels and upsamples x4.

    .venv/bin/python examples/vit_tokens.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

HRNET = "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"


class TinyViT(nn.Module):
    """Patch-16 embedding, a class token, position embeddings resized to the input, a few encoder layers."""

    def __init__(
        self, dim: int = 192, depth: int = 2, heads: int = 3, patch: int = 16, grid: tuple[int, int] = (16, 12)
    ):
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, dim, *grid) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        pos = F.interpolate(self.pos, size=x.shape[-2:], mode="bilinear", align_corners=False)
        tokens = (x + pos).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        return self.norm(self.encoder(tokens))


def main() -> None:
    import adaptkit
    from adaptkit.mm.fragments import wrap_config
    from adaptkit.mm.openmmlab import build_model, load_config

    source = f"{Path(__file__).resolve()}:TinyViT"
    result = adaptkit.probe(adaptkit.resolve_source(source), (2, 3, 256, 192))
    (tokens,) = result.features
    print(f"tokens {list(tokens.shape)}: layout {tokens.layout.value}, {tokens.prefix_tokens} prefix token, "
          f"stride {tokens.stride}, grid {tokens.spatial}")  # fmt: skip

    fragment = Path(tempfile.mkdtemp(prefix="adaptkit-vit-")) / "vit_hrnet-w32_coco.py"
    plan = wrap_config(source, HRNET, fragment).plan
    for step in plan.steps[1:]:
        print(f"  {step.kind.value}: {step.why}")
    model = build_model(load_config(fragment).model)
    model.eval()
    with torch.no_grad():
        print("heatmaps:", list(model(torch.randn(1, 3, 256, 192), None, mode="tensor").shape))
    print(f"wrote {fragment}")


if __name__ == "__main__":
    main()
