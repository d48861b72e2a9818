"""Smoke training from Python, and the ``python -m adaptkit.mm.synthetic`` launch path for DDP.

The work lives in :mod:`adaptkit.mm.synthetic_data` (the learnable
dataset, in each dataset type's layout) and :mod:`adaptkit.mm.smoke` (the
Runner, the held-out score, loadable weights); ``adaptkit smoke`` is the
command. This module keeps the short helpers the examples and tests call,
and the entry point ``torch.distributed.run -m adaptkit.mm.synthetic``
starts in each process.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["write_keypoint_dataset", "smoke_config", "train_smoke"]


def write_keypoint_dataset(
    root: str | Path,
    *,
    num_images: int = 4,
    num_keypoints: int = 17,
    image_size: tuple[int, int] = (160, 128),
    seed: int = 0,
) -> Path:
    """Write ``root/images/*.jpg`` and ``root/annotations.json`` (COCO layout); return the annotation path.

    17 keypoints get COCO's person; any other count a generic figure.
    ``image_size`` is (width, height).
    """
    from adaptkit.mm.synthetic_data import AnnotationStyle, KeypointLayout, write_split

    if num_keypoints == 17:
        from adaptkit.mm.openmmlab import ensure_mmpose
        from adaptkit.mm.synthetic_data import layout_for_dataset

        ensure_mmpose()
        layout = layout_for_dataset({"type": "CocoDataset"})
    else:
        layout = KeypointLayout(
            dataset_type="CocoDataset",
            style=AnnotationStyle.COCO,
            names=tuple(f"kpt_{k}" for k in range(num_keypoints)),
            flip_indices=tuple(range(num_keypoints)),
            skeleton=(),
        )
    root = Path(root)
    files = write_split(root, "images", layout, num_images=num_images, seed=seed, image_size=image_size)
    ann = root / "annotations.json"
    (root / files.ann_file).replace(ann)
    return ann


def smoke_config(cfg: Any, data_root: str | Path, work_dir: str | Path, *, batch_size: int = 2, epochs: int = 1) -> Any:
    """Point a config at a :func:`write_keypoint_dataset` folder for a short epoch-based CPU run.

    Keeps the stock pipelines, model and optimizer; changes only paths,
    loader sizes and loop lengths, and drops what needs downloads
    (person-detection box files).
    """
    from adaptkit.mm.smoke import _point_evaluator, _point_loader
    from adaptkit.mm.synthetic_data import SplitFiles

    root = Path(data_root)
    files = SplitFiles(ann_file="annotations.json", img_prefix="images/", headbox_file=None, num_images=0)
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(key) is not None:
            _point_loader(cfg[key], root, files, batch_size, shuffle=key == "train_dataloader")
    for key in ("val_evaluator", "test_evaluator"):
        if cfg.get(key) is not None:
            cfg[key] = _point_evaluator(cfg[key], root / files.ann_file, Path(work_dir))
    cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=epochs)
    cfg.work_dir = str(work_dir)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=epochs)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.visualizer.vis_backends = [dict(type="LocalVisBackend")]
    cfg.env_cfg = dict(
        cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict(backend="gloo")
    )
    cfg.launcher = cfg.get("launcher", "none")
    return cfg


def train_smoke(
    fragment: str | Path,
    work_dir: str | Path,
    *,
    launcher: str = "none",
    num_images: int = 4,
    batch_size: int = 2,
    epochs: int = 1,
    test: bool = False,
    log_level: str = "WARNING",
) -> dict[str, Any]:
    """Train ``fragment`` for ``epochs`` passes over ``num_images`` synthetic images; a quick check.

    Returns the held-out metrics when ``test`` is set (empty otherwise);
    the Runner's checkpoint is ``work_dir/iter_N.pth`` and the weights-only
    export ``work_dir/weights.pth``. ``adaptkit smoke`` runs the real budget.
    """
    from adaptkit.mm.smoke import SmokeSettings, run_smoke

    iters = max(1, epochs * math.ceil(num_images / batch_size))
    settings = SmokeSettings(iters=iters, images=num_images, batch=batch_size, val_images=min(num_images, 4))
    result = run_smoke(fragment, work_dir, settings, launcher=launcher, log_level=log_level)
    return dict(result.metrics) if test else {}


def main(argv: list[str] | None = None) -> int:
    """``python -m adaptkit.mm.synthetic FRAGMENT WORK_DIR [--launcher pytorch] [--iters N] ...``."""
    import argparse

    from adaptkit.mm.smoke import SmokeSettings, run_smoke

    parser = argparse.ArgumentParser(prog="python -m adaptkit.mm.synthetic", description=run_smoke.__doc__)
    parser.add_argument("fragment")
    parser.add_argument("work_dir")
    parser.add_argument("--launcher", default="none", choices=("none", "pytorch"))
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    settings = SmokeSettings(iters=args.iters, images=args.images, batch=args.batch, val_images=4)
    result = run_smoke(args.fragment, args.work_dir, settings, launcher=args.launcher, log_level=args.log_level)
    print(json.dumps({"metric": result.metric, "value": result.value, "checkpoint": str(result.checkpoint)}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
