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
            evaluator["ann_file"] = ann
            evaluator["outfile_prefix"] = str(Path(work_dir) / "results")
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
    """Train ``fragment`` on a synthetic dataset with mmengine's Runner (and test it when asked).

    ``launcher`` is mmengine's: "none" for one process, "pytorch" under
    ``torch.distributed.run``. Returns the test metrics (empty without ``test``).
    """
    from adaptkit.mm.openmmlab import ensure_mmpose, load_config, quiet

    ensure_mmpose()
    work = Path(work_dir)
    cfg = load_config(fragment)
    head = cfg.model.get("head", {})
    data_root = work / "data"
    write_keypoint_dataset(data_root, num_images=num_images, num_keypoints=int(head.get("out_channels", 17)))
    cfg = smoke_config(cfg, data_root, work, batch_size=batch_size, epochs=epochs)
    cfg.launcher = launcher
    cfg.log_level = log_level
    opened_group = launcher != "none" and _cpu_distributed(cfg)
    try:
        with quiet():
            from mmengine.runner import Runner

            runner = Runner.from_cfg(cfg)
        with quiet():
            runner.train()
            return dict(runner.test()) if test else {}
    finally:
        if opened_group:
            import torch.distributed as dist

            dist.destroy_process_group()  # gloo's threads must stop before the interpreter exits


def _cpu_distributed(cfg: Any) -> bool:
    """Let mmengine's Runner train with torch.distributed on CPUs (gloo).

    mmengine's pytorch launcher calls ``torch.cuda.set_device`` and wraps the
    model with ``device_ids=[LOCAL_RANK]``; neither works without a GPU. The
    Runner skips its own set-up when a process group exists, so open one
    here, and name the wrapper with ``device_ids=None`` (a CPU module).
    Returns whether it opened the group (and so must close it).
    """
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        return False
    opened = not dist.is_initialized()
    if opened:
        dist.init_process_group(backend="gloo")
    cfg.model_wrapper_cfg = dict(
        type="MMDistributedDataParallel",
        device_ids=None,
        broadcast_buffers=False,
        find_unused_parameters=cfg.get("find_unused_parameters", False),
    )
    return opened


def main(argv: list[str] | None = None) -> int:
    """``python -m adaptkit.synthetic FRAGMENT WORK_DIR [--launcher pytorch] [--test]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m adaptkit.synthetic", description=train_smoke.__doc__)
    parser.add_argument("fragment")
    parser.add_argument("work_dir")
    parser.add_argument("--launcher", default="none", choices=("none", "pytorch"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--test", action="store_true")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    metrics = train_smoke(
        args.fragment,
        args.work_dir,
        launcher=args.launcher,
        epochs=args.epochs,
        test=args.test,
        log_level=args.log_level,
    )
    if metrics:
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
