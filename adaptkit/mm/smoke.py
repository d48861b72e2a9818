"""Smoke training: a fragment trained with mmengine's Runner on a learnable synthetic task.

The fragment's own model, optimizer type, data pipelines and metric run
unchanged; only the data (written by :mod:`adaptkit.mm.synthetic_data`, in
the layout its dataset type reads), the loop length, the batch and a short
warm-up + cosine schedule are set here. A held-out split, written with
another seed, is scored by the stock metric. Checkpoints: the Runner's own
``iter_N.pth`` (to resume) and a weights-only ``weights.pth`` beside it that
``mmpose.apis.init_model`` loads under torch >= 2.6's ``weights_only``
default, with no environment variable.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptkit.errors import ConfigError, OptionError

__all__ = [
    "SmokeSettings",
    "SmokeResult",
    "Progress",
    "check_smoke_config",
    "prepare_smoke_config",
    "run_smoke",
    "headline_metric",
    "DEFAULT_ITERS",
    "DEFAULT_IMAGES",
    "DEFAULT_BATCH",
    "DEFAULT_VAL_IMAGES",
]

#: the default budget: SCTNet-B into the HRNet-W32 COCO head passes AP 0.5 within it on 2 CPU cores
DEFAULT_ITERS = 100
DEFAULT_IMAGES = 800
DEFAULT_BATCH = 16
DEFAULT_VAL_IMAGES = 100
#: Adam's learning rate for the short schedule (the stock 5e-4 assumes 210 epochs and batch 512)
DEFAULT_LR = 2e-3
TRAIN_SEED, VAL_SEED = 0, 1

#: ``progress(stage, done, total, loss)``: stage is "train" or "test"; loss is None while testing
Progress = Callable[[str, int, int, "float | None"], None]


@dataclass(frozen=True)
class SmokeSettings:
    """The budget of one smoke run; every size must be positive."""

    iters: int = DEFAULT_ITERS
    images: int = DEFAULT_IMAGES
    batch: int = DEFAULT_BATCH
    val_images: int = DEFAULT_VAL_IMAGES
    lr: float = DEFAULT_LR
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iters", "images", "batch", "val_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = name.replace("_", "-")
                raise OptionError(f"--{flag} must be a positive whole number, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise OptionError(f"the learning rate must be a positive number, got {self.lr!r}")


@dataclass(frozen=True)
class SmokeResult:
    """What a smoke run measured and where it left its files."""

    metrics: dict[str, float]
    metric: str  # the headline metric's name, e.g. coco/AP, PCK, NME
    value: float
    higher_is_better: bool
    iters: int
    seconds: float
    cpu_seconds: float
    checkpoint: Path  # weights-only, loads with init_model under torch >= 2.6
    runner_checkpoint: Path | None  # mmengine's full checkpoint (optimizer state, to resume)
    work_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ap(self) -> float | None:
        return self.value if self.metric.endswith("/AP") else None


def headline_metric(metrics: dict[str, float]) -> tuple[str, float, bool]:
    """The one number to print: AP for COCO-style metrics, else PCK(h), else NME (lower is better)."""
    for suffix, higher in (("/AP", True), ("PCKh", True), ("PCK", True), ("AUC", True), ("NME", False)):
        for name, value in metrics.items():
            if name.endswith(suffix):
                return name, float(value), higher
    if not metrics:
        raise ConfigError("the test metric returned nothing; check the config's test_evaluator")
    name, value = next(iter(metrics.items()))
    return name, float(value), True


def check_smoke_config(cfg: Any, source: str) -> Any:
    """The dataset layout if ``cfg`` is a top-down pose config smoke can train; ConfigError otherwise."""
    from adaptkit.mm.openmmlab import ensure_mmpose
    from adaptkit.mm.synthetic_data import layout_for_dataset

    registry = ensure_mmpose()
    model = cfg.get("model")
    model_type = model.get("type") if hasattr(model, "get") else None
    from mmpose.models.pose_estimators.base import BasePoseEstimator

    cls = registry.get(model_type) if isinstance(model_type, str) else None
    if not (isinstance(cls, type) and issubclass(cls, BasePoseEstimator)):
        raise ConfigError(f"{source!r} is not a pose config (model.type is {model_type!r}, not a pose estimator)")
    if "TopdownPoseEstimator" not in {c.__name__ for c in cls.__mro__}:
        raise ConfigError(f"{source!r} is a {model_type} config; smoke trains top-down pose configs only")
    loader = cfg.get("train_dataloader")
    if not hasattr(loader, "get") or not hasattr(loader.get("dataset"), "get"):
        raise ConfigError(f"{source!r} has no train_dataloader.dataset; smoke needs the config's dataset type")
    if loader.dataset.get("data_mode", "topdown") != "topdown":
        raise ConfigError(f"{source!r} reads its dataset bottom-up; smoke trains top-down pose configs only")
    for key in ("test_dataloader", "test_evaluator", "test_cfg"):
        if cfg.get(key) is None:
            raise ConfigError(f"{source!r} has no {key}; smoke scores the held-out split with the config's metric")
    return layout_for_dataset(loader.dataset)


def _point_loader(loader: Any, root: Path, files: Any, batch: int, *, shuffle: bool) -> None:
    loader.batch_size = batch
    loader.num_workers = 0
    loader.persistent_workers = False
    loader.sampler = dict(type="DefaultSampler", shuffle=shuffle, **({} if shuffle else {"round_up": False}))
    dataset = loader.dataset
    dataset.data_root = str(root)
    dataset.ann_file = files.ann_file
    dataset.data_prefix = dict(img=files.img_prefix)
    dataset.pop("bbox_file", None)
    if files.headbox_file is not None and "headbox_file" in dataset:
        dataset.headbox_file = str(root / files.headbox_file)
    elif "headbox_file" in dataset:
        dataset.pop("headbox_file")


def _point_evaluator(evaluator: Any, ann_file: Path, work_dir: Path) -> Any:
    items = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    for item in items:
        if "Coco" in str(item.get("type", "")) or "ann_file" in item:
            item["ann_file"] = str(ann_file)
            item["outfile_prefix"] = str(work_dir / "results")
    return evaluator


def prepare_smoke_config(cfg: Any, layout: Any, work_dir: Path, settings: SmokeSettings, data_dir: Path) -> Any:
    """Write both splits under ``data_dir`` and point ``cfg`` at them with the smoke budget."""
    from adaptkit.mm.synthetic_data import write_split

    size = _image_size(cfg)
    train = write_split(data_dir, "train", layout, num_images=settings.images, seed=TRAIN_SEED, image_size=size)
    val = write_split(data_dir, "val", layout, num_images=settings.val_images, seed=VAL_SEED, image_size=size)
    _point_loader(cfg.train_dataloader, data_dir, train, settings.batch, shuffle=True)
    for key in ("val_dataloader", "test_dataloader"):
        if cfg.get(key) is not None:
            _point_loader(cfg[key], data_dir, val, min(settings.batch, 32), shuffle=False)
    for key in ("val_evaluator", "test_evaluator"):
        if cfg.get(key) is not None:
            cfg[key] = _point_evaluator(cfg[key], data_dir / val.ann_file, work_dir)
    cfg.model = _drop_remote_init(cfg.model)
    warmup = min(50, settings.iters // 5)  # none for a run of a few iterations (mmengine needs end > begin)
    cfg.optim_wrapper.optimizer.lr = settings.lr
    cfg.param_scheduler = [
        *([dict(type="LinearLR", begin=0, end=warmup, start_factor=0.1, by_epoch=False)] if warmup else []),
        dict(type="CosineAnnealingLR", begin=warmup, end=settings.iters, T_max=settings.iters - warmup,
             eta_min=settings.lr * 0.02, by_epoch=False),
    ]  # fmt: skip
    cfg.pop("auto_scale_lr", None)
    cfg.train_cfg = dict(by_epoch=False, max_iters=settings.iters, val_interval=settings.iters + 1)
    cfg.work_dir = str(work_dir)
    cfg.default_hooks.checkpoint = dict(
        type="CheckpointHook", interval=settings.iters, by_epoch=False, max_keep_ckpts=1
    )
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=10)
    cfg.default_hooks.pop("visualization", None)
    cfg.log_processor = dict(type="LogProcessor", window_size=10, by_epoch=False)
    cfg.visualizer.vis_backends = [dict(type="LocalVisBackend")]
    cfg.randomness = dict(seed=settings.seed)
    cfg.env_cfg = dict(
        cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict(backend="gloo")
    )
    cfg.launcher = cfg.get("launcher", "none")
    return cfg


def _is_remote(init: Any) -> bool:
    if isinstance(init, (list, tuple)):
        return any(_is_remote(i) for i in init)
    checkpoint = init.get("checkpoint") if hasattr(init, "get") else None
    return isinstance(checkpoint, str) and "://" in checkpoint


def _drop_remote_init(cfg: Any) -> Any:
    """The model config without the ``init_cfg`` entries that would download (stock configs' ImageNet weights).

    Smoke starts those parts from their random init; a local checkpoint
    (``wrap --checkpoint``) stays.
    """
    if hasattr(cfg, "items"):
        return type(cfg)({k: _drop_remote_init(v) for k, v in cfg.items() if not (k == "init_cfg" and _is_remote(v))})
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_drop_remote_init(v) for v in cfg)
    return cfg


def _image_size(cfg: Any) -> tuple[int, int]:
    """Synthetic images a little larger than the network's input, so crops rescale as on real data."""
    codec = cfg.get("codec")
    size = codec.get("input_size") if hasattr(codec, "get") else None
    width, height = (int(v) for v in size) if size else (192, 256)
    side = max(width, height)
    return side, side


def run_smoke(
    fragment: str | Path,
    work_dir: str | Path,
    settings: SmokeSettings | None = None,
    *,
    launcher: str = "none",
    progress: Progress | None = None,
    log_level: str = "WARNING",
) -> SmokeResult:
    """Train ``fragment`` on the synthetic task, score the held-out split, export loadable weights.

    Every check (settings, config) runs before ``work_dir`` is created.
    ``launcher`` is mmengine's: "none" for one process, "pytorch" under
    ``torch.distributed.run``.
    """
    from adaptkit.mm.openmmlab import load_config, quiet

    settings = settings or SmokeSettings()
    if launcher not in ("none", "pytorch"):
        raise OptionError(f"launcher must be 'none' or 'pytorch', got {launcher!r}")
    cfg = load_config(fragment)
    layout = check_smoke_config(cfg, str(fragment))
    work = Path(work_dir)
    started, cpu_started = time.perf_counter(), time.process_time()
    rank = int(os.environ.get("RANK", "0"))
    data_dir = work / "data" if rank == 0 else work / f"data_rank{rank}"  # each process writes its own copy
    cfg = prepare_smoke_config(cfg, layout, work, settings, data_dir)
    cfg.launcher = launcher
    cfg.log_level = log_level
    opened_group = launcher != "none" and _cpu_distributed(cfg)
    try:
        with quiet():
            from mmengine.runner import Runner

            runner = Runner.from_cfg(cfg)
        if progress is not None:
            runner.register_hook(_progress_hook(progress, settings.iters), priority="VERY_LOW")
        with quiet():
            runner.train()
            metrics = {k: float(v) for k, v in dict(runner.test()).items()}
        weights = work / "weights.pth"
        if rank == 0:
            _export_weights(runner.model, weights)
    finally:
        if opened_group:
            import torch.distributed as dist

            dist.destroy_process_group()  # gloo's threads must stop before the interpreter exits
    name, value, higher = headline_metric(metrics)
    runner_ckpt = work / f"iter_{settings.iters}.pth"
    return SmokeResult(
        metrics=metrics,
        metric=name,
        value=value,
        higher_is_better=higher,
        iters=settings.iters,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        checkpoint=weights,
        runner_checkpoint=runner_ckpt if runner_ckpt.is_file() else None,
        work_dir=work,
    )


def _progress_hook(progress: Progress, total: int) -> Any:
    from mmengine.hooks import Hook

    class ProgressHook(Hook):
        """Reports each training and test iteration to the caller (the CLI draws the bar)."""

        def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            loss = outputs.get("loss") if isinstance(outputs, dict) else None
            progress("train", runner.iter + 1, total, float(loss) if loss is not None else None)

        def after_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            progress("test", batch_idx + 1, len(runner.test_dataloader), None)

    return ProgressHook()


def _export_weights(model: Any, path: Path) -> None:
    """Save the bare state dict (tensors only): torch's weights_only loader accepts it as it is."""
    import torch
    from mmengine.model import is_model_wrapper

    if is_model_wrapper(model):
        model = model.module
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": state, "meta": {"adaptkit": "smoke"}}, tmp)
    tmp.replace(path)


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
