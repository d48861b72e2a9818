"""SCTNet-B into mmpose's stock HRNet-W32 heatmap config, from nothing, on the CPU.

The whole job a researcher does by hand today, as adaptkit does it:

1. probe the backbone: what does it return, at which stride and layout?
2. plan against the stock config: which feature, which chain of steps?
3. wrap: write the config fragment (no edit to mmpose).
4. build the estimator from the fragment with mmpose's registry.
5. smoke: train it with mmengine's Runner on synthetic figures (real files,
   the stock data pipeline) and score held-out images with the stock COCO
   metric; the AP shows that the adapted model learns.

Nothing is downloaded. Run it with ``make demo`` or
``.venv/bin/python examples/sctnet_into_hrnet.py [--work-dir DIR]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from adaptkit.cli import main as adaptkit_cli

#: a shorter budget than ``adaptkit smoke``'s default, enough to see the model learn within a few minutes
DEMO_ITERS = 40
DEMO_IMAGES = 400
HRNET = "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"


def adaptkit(argv: list[str]) -> None:
    """Run one adaptkit command as the shell would; stop the demo if it fails."""
    code = adaptkit_cli(argv)
    if code:
        sys.exit(code)


def run(work_dir: Path, backbone: str = "sctnet") -> None:
    fragment = work_dir / "sctnet_hrnet-w32_coco.py"
    work_dir.mkdir(parents=True, exist_ok=True)
    fragment.unlink(missing_ok=True)  # only what an earlier run of the demo wrote
    shutil.rmtree(work_dir / "train", ignore_errors=True)  # only what an earlier run of the demo wrote

    print(f"\n$ adaptkit probe {backbone} --input 2x3x640x640")
    adaptkit(["probe", backbone, "--input", "2x3x640x640"])

    print(f"\n$ adaptkit plan {backbone} --target {HRNET} --input 2x3x256x192")
    adaptkit(["plan", backbone, "--target", HRNET, "--input", "2x3x256x192"])

    print(f"\n$ adaptkit wrap {backbone} --target {HRNET} --out {fragment}")
    adaptkit(["wrap", backbone, "--target", HRNET, "--out", str(fragment)])
    print(fragment.read_text())

    print("# build the estimator from the fragment: the heatmaps have the stock codec's shape")
    import torch

    from adaptkit.mm.openmmlab import build_model, load_config

    model = build_model(load_config(fragment).model)
    model.eval()
    with torch.no_grad():
        heatmaps = model(torch.randn(2, 3, 256, 192), None, mode="tensor")
    print(f"heatmaps for a 2x3x256x192 batch: {list(heatmaps.shape)} (the codec wants 17 x 64x48)")

    smoke = ["smoke", str(fragment), "--work-dir", str(work_dir / "train"), "--iters", str(DEMO_ITERS)]
    smoke += ["--images", str(DEMO_IMAGES)]
    print(f"\n$ adaptkit {' '.join(smoke)}")
    print("# train on synthetic figures with mmengine's Runner, score held-out images with the stock COCO metric")
    adaptkit(smoke)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/demo"))
    parser.add_argument("--backbone", default="sctnet", help="zoo name or SOURCE (default: sctnet = SCTNet-B)")
    args = parser.parse_args()
    run(args.work_dir, args.backbone)


if __name__ == "__main__":
    main()
