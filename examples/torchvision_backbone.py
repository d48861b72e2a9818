"""A torchvision ResNet-50 or ConvNeXt-T into mmpose's stock HRNet-W32 config.

torchvision's feature extractor returns a dict of maps ({'c2': ..., 'c5': ...});
adaptkit probes it and, since the stride-4 map the head's stride matches
depends on 1 % of the weights, merges every coarser map into it (c2..c5,
summed), then writes the fragment. The fragment names this file's `resnet50_features` /
`convnext_features` as its SOURCE, so mmpose builds it with no edit.

    .venv/bin/python examples/torchvision_backbone.py [--model convnext]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

HRNET = "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"


def resnet50_features() -> nn.Module:
    """ResNet-50's four stages as a dict (random weights: nothing is downloaded)."""
    from torchvision.models import resnet50
    from torchvision.models.feature_extraction import create_feature_extractor

    stages = {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}
    return create_feature_extractor(resnet50(weights=None), return_nodes=stages)


def convnext_features() -> nn.Module:
    """ConvNeXt-T's four stages as a dict."""
    from torchvision.models import convnext_tiny
    from torchvision.models.feature_extraction import create_feature_extractor

    stages = {"features.1": "c2", "features.3": "c3", "features.5": "c4", "features.7": "c5"}
    return create_feature_extractor(convnext_tiny(weights=None), return_nodes=stages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("resnet50", "convnext"), default="resnet50")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()

    import adaptkit
    from adaptkit.mm.fragments import wrap_config
    from adaptkit.mm.openmmlab import build_model, load_config
    from adaptkit.mm.synthetic import train_smoke

    source = f"{Path(__file__).resolve()}:{args.model}_features"
    result = adaptkit.probe(adaptkit.resolve_source(source), (2, 3, 256, 192))
    for f in result.features:
        print(f"  {f.path:4s} {list(f.shape)} stride {f.stride}")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="adaptkit-tv-"))
    fragment = work / f"{args.model}_hrnet-w32_coco.py"
    plan = wrap_config(source, HRNET, fragment, force=True).plan
    print(f"chose {', '.join(map(repr, plan.paths))}: {plan.reason}")
    print(f"backbone used: {100 * plan.uses:.1f}% of its parameters reach the head")
    print(f"wrote {fragment}")

    model = build_model(load_config(fragment).model)
    model.eval()
    with torch.no_grad():
        print("heatmaps:", list(model(torch.randn(1, 3, 256, 192), None, mode="tensor").shape))
    train_smoke(fragment, work / "train", num_images=2, batch_size=2)
    print(f"trained one epoch: {work / 'train' / 'weights.pth'}")


if __name__ == "__main__":
    main()
