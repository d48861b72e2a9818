"""A tiny COCO-style keypoint dataset, written to disk, for smoke-training a fragment.

Real files through mmpose's real pipeline (LoadImage, TopdownAffine,
GenerateTarget...), so a fragment that trains here trains on real data
too; nothing is downloaded. Used by the demo, the examples and the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_keypoint_dataset", "smoke_config"]


def write_keypoint_dataset(
    root: str | Path,
    *,
    num_images: int = 4,
    num_keypoints: int = 17,
    image_size: tuple[int, int] = (160, 128),
    seed: int = 0,
) -> Path:
    """Write ``root/images/*.jpg`` and ``root/annotations.json``; return the annotation path.

    Each image holds one person box with ``num_keypoints`` visible
    keypoints drawn as bright dots, so the heatmap targets are not empty.
    ``image_size`` is (width, height).
    """
    import cv2  # opencv comes with mmpose's stack

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = image_size
    images, annotations = [], []
    for i in range(num_images):
        image = rng.integers(0, 64, size=(height, width, 3), dtype=np.uint8)
        x0, y0 = rng.uniform(4, width * 0.25), rng.uniform(4, height * 0.25)
        bw, bh = rng.uniform(width * 0.5, width * 0.7), rng.uniform(height * 0.5, height * 0.7)
        points = np.stack([rng.uniform(x0, x0 + bw, num_keypoints), rng.uniform(y0, y0 + bh, num_keypoints)], axis=1)
        for x, y in points:
            cv2.circle(image, (int(x), int(y)), 3, (255, 255, 255), -1)
        name = f"{i:06d}.jpg"
        cv2.imwrite(str(root / "images" / name), image)
        images.append(dict(id=i + 1, file_name=name, width=width, height=height, crowdIndex=0.0))
        keypoints = np.concatenate([points, np.full((num_keypoints, 1), 2.0)], axis=1).reshape(-1)
        annotations.append(
            dict(
                id=i + 1,
                image_id=i + 1,
                category_id=1,
                bbox=[float(x0), float(y0), float(bw), float(bh)],
                area=float(bw * bh),
                iscrowd=0,
                num_keypoints=num_keypoints,
                keypoints=[round(float(v), 2) for v in keypoints],
            )
        )
    categories = [
        dict(
            id=1,
            name="person",
            supercategory="person",
            keypoints=[f"kpt_{k}" for k in range(num_keypoints)],
            skeleton=[],
        )
    ]
    ann = root / "annotations.json"
    ann.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return ann


def smoke_config(cfg: Any, data_root: str | Path, work_dir: str | Path, *, batch_size: int = 2, epochs: int = 1) -> Any:
    """Point a stock-config-derived Config at the synthetic dataset, for a short CPU run.

    Keeps the stock pipelines, model and optimizer; changes only paths,
    loader sizes and loop lengths, and drops what needs downloads
    (person-detection box files).
    """
    root = Path(data_root)
    ann = str(root / "annotations.json")
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(key)
        if loader is None:
            continue
        loader.batch_size = batch_size
        loader.num_workers = 0
        loader.persistent_workers = False
        dataset = loader.dataset
        dataset.data_root = str(root)
        dataset.ann_file = "annotations.json"
        dataset.data_prefix = dict(img="images/")
        dataset.pop("bbox_file", None)
    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        if isinstance(evaluator, dict):
            evaluator.ann_file = ann
            evaluator.outfile_prefix = str(Path(work_dir) / "results")
    cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=epochs)
    cfg.work_dir = str(work_dir)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=epochs)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.visualizer.vis_backends = [dict(type="LocalVisBackend")]
    cfg.env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict(backend="gloo"))
    cfg.launcher = cfg.get("launcher", "none")
    return cfg
