"""The rule table of the port check: which mmcv 1.x / mmseg 0.x / mmpose 0.x paths moved where.

Data only, checked against the installed mmcv 2.x / mmengine by the tests;
``adaptkit.tools.porting`` scans and rewrites files with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PortRule", "PORT_RULES", "lookup"]


@dataclass(frozen=True)
class PortRule:
    """``old`` (a dotted module or module.name path) became ``new``.

    ``fixable``: ``new`` is a drop-in for ``old``, so an import can be rewritten.
    ``module``: ``old`` names a module, and the rule covers every name under it
    (carried over name for name to ``new`` when ``fixable``). ``new`` is empty
    when nothing replaces ``old``.
    """

    old: str
    new: str
    note: str
    fixable: bool
    module: bool


def _moved(old_parents: Iterable[str], new_parent: str, names: str, note: str) -> list[PortRule]:
    """One drop-in rule per name, for every old parent the name was importable from."""
    return [
        PortRule(f"{parent}.{name}", f"{new_parent}.{name}", note, True, False)
        for parent in old_parents
        for name in names.split()
    ]


def _renamed(old: str, new: str, note: str) -> PortRule:
    return PortRule(old, new, note, True, False)


def _by_hand(old: str, new: str, note: str) -> PortRule:
    return PortRule(old, new, note, False, False)


def _module(old: str, new: str, note: str, *, wholesale: bool) -> PortRule:
    return PortRule(old, new, note, wholesale, True)


_WEIGHT_INIT = (
    "constant_init kaiming_init normal_init trunc_normal_init uniform_init xavier_init caffe2_xavier_init "
    "bias_init_with_prob initialize ConstantInit KaimingInit NormalInit TruncNormalInit UniformInit "
    "XavierInit PretrainedInit Caffe2XavierInit"
)
_MMCV_CNN_REGISTRIES = "ACTIVATION_LAYERS CONV_LAYERS NORM_LAYERS PADDING_LAYERS PLUGIN_LAYERS UPSAMPLE_LAYERS"
_MMCV_TRANSFORMER_REGISTRIES = (
    "DROPOUT_LAYERS ATTENTION FEEDFORWARD_NETWORK POSITIONAL_ENCODING TRANSFORMER_LAYER TRANSFORMER_LAYER_SEQUENCE"
)
_MMCV_UTILS_TO_MMENGINE_UTILS = (
    "to_1tuple to_2tuple to_3tuple to_4tuple to_ntuple is_str is_list_of is_tuple_of is_seq_of iter_cast "
    "list_cast tuple_cast slice_list concat_list deprecated_api_warning import_modules_from_strings "
    "is_method_overridden requires_package requires_executable check_prerequisites check_file_exist fopen "
    "is_filepath mkdir_or_exist scandir symlink ProgressBar track_progress track_iter_progress "
    "track_parallel_progress Timer TimerError check_time digit_version get_git_hash"
)
_MMCV_FILEIO = "load dump FileClient list_from_file dict_from_file register_handler BaseFileHandler"
_PARROTS = "_BatchNorm _InstanceNorm _ConvNd _AvgPoolNd _MaxPoolNd _AdaptiveAvgPoolNd _AdaptiveMaxPoolNd SyncBatchNorm"
_REGISTRY_SCOPE = (
    "registers into {pkg}'s scope, where an mmpose config does not look (and needs {pkg} installed); "
    "mmpose builds from mmpose.registry.MODELS"
)
_AMP = (
    "removed in mmcv 2.0: mixed precision is mmengine's AmpOptimWrapper "
    "(optim_wrapper=dict(type='AmpOptimWrapper')) or torch.autocast; drop the decorator"
)

PORT_RULES: tuple[PortRule, ...] = (
    # mmcv.runner: removed in mmcv 2.0; split over mmengine.model / runner / dist / registry
    _module(
        "mmcv.runner",
        "mmengine.runner",
        "removed in mmcv 2.0: modules are in mmengine.model, checkpoints in mmengine.runner, "
        "distributed helpers in mmengine.dist, hooks in mmengine.hooks",
        wholesale=False,
    ),
    _module("mmcv.runner.base_module", "mmengine.model.base_module", "moved to mmengine", wholesale=True),
    _module("mmcv.runner.checkpoint", "mmengine.runner.checkpoint", "moved to mmengine", wholesale=True),
    *_moved(["mmcv.runner"], "mmengine.model", "BaseModule ModuleList Sequential ModuleDict", "moved to mmengine"),
    *_moved(
        ["mmcv.runner"],
        "mmengine.runner",
        "load_checkpoint load_state_dict save_checkpoint CheckpointLoader weights_to_cpu",
        "moved to mmengine",
    ),
    *_moved(["mmcv.runner"], "mmengine.runner.checkpoint", "_load_checkpoint _load_checkpoint_with_prefix", "moved"),
    *_moved(["mmcv.runner"], "mmengine.dist", "get_dist_info init_dist master_only", "moved to mmengine.dist"),
    *_moved(["mmcv.runner"], "mmengine.registry", "HOOKS OPTIMIZERS RUNNERS", "mmengine's root registries"),
    _renamed(
        "mmcv.runner.Hook",
        "mmengine.hooks.Hook",
        "hook points changed: e.g. after_train_iter(runner, batch_idx, data_batch, outputs)",
    ),
    _by_hand("mmcv.runner.auto_fp16", "", _AMP),
    _by_hand("mmcv.runner.force_fp32", "", _AMP),
    _by_hand("mmcv.runner.wrap_fp16_model", "", _AMP),
    _by_hand(
        "mmcv.runner.build_optimizer",
        "mmengine.optim.build_optim_wrapper",
        "returns an OptimWrapper; configure it with optim_wrapper=dict(optimizer=dict(...))",
    ),
    _by_hand(
        "mmcv.runner.DefaultOptimizerConstructor",
        "mmengine.optim.DefaultOptimWrapperConstructor",
        "builds an OptimWrapper; paramwise_cfg moved into optim_wrapper",
    ),
    _by_hand(
        "mmcv.runner.EpochBasedRunner",
        "mmengine.runner.Runner",
        "one Runner: train_cfg=dict(by_epoch=True, max_epochs=...)",
    ),
    _by_hand(
        "mmcv.runner.IterBasedRunner",
        "mmengine.runner.Runner",
        "one Runner: train_cfg=dict(by_epoch=False, max_iters=...)",
    ),
    # mmcv.parallel: removed; the runner wraps models itself
    _module(
        "mmcv.parallel",
        "mmengine.model",
        "removed in mmcv 2.0: model wrappers are in mmengine.model and the runner applies them",
        wholesale=False,
    ),
    _by_hand(
        "mmcv.parallel.MMDataParallel",
        "",
        "removed: a single device needs no wrapper; move the model with model.to(device)",
    ),
    _renamed(
        "mmcv.parallel.MMDistributedDataParallel",
        "mmengine.model.MMDistributedDataParallel",
        "moved; the runner wraps the model itself (model_wrapper_cfg)",
    ),
    _renamed("mmcv.parallel.is_module_wrapper", "mmengine.model.is_model_wrapper", "renamed is_model_wrapper"),
    _renamed("mmcv.parallel.MODULE_WRAPPERS", "mmengine.registry.MODEL_WRAPPERS", "renamed MODEL_WRAPPERS"),
    _by_hand("mmcv.parallel.DataContainer", "", "removed: batches carry mmengine data elements (e.g. PoseDataSample)"),
    _by_hand(
        "mmcv.parallel.collate",
        "mmengine.dataset.pseudo_collate",
        "the data loader's collate_fn; pseudo_collate or default_collate",
    ),
    # mmcv.cnn: weight init moved to mmengine.model; the layer registries merged into MODELS
    _module("mmcv.cnn.utils.weight_init", "mmengine.model.weight_init", "moved to mmengine", wholesale=True),
    *_moved(
        ["mmcv.cnn", "mmcv.cnn.utils", "mmcv.cnn.utils.weight_init"],
        "mmengine.model",
        _WEIGHT_INIT,
        "weight init moved to mmengine.model",
    ),
    _renamed("mmcv.cnn.INITIALIZERS", "mmengine.registry.WEIGHT_INITIALIZERS", "renamed WEIGHT_INITIALIZERS"),
    _renamed("mmcv.cnn.utils.INITIALIZERS", "mmengine.registry.WEIGHT_INITIALIZERS", "renamed WEIGHT_INITIALIZERS"),
    _module(
        "mmcv.cnn.bricks.registry",
        "mmengine.registry.MODELS",
        "removed in mmcv 2.0: every layer registers in mmengine.registry.MODELS",
        wholesale=False,
    ),
    *[
        _renamed(f"{parent}.{name}", "mmengine.registry.MODELS", "merged into MODELS (mmcv 2.0)")
        for parent in ("mmcv.cnn", "mmcv.cnn.bricks", "mmcv.cnn.bricks.registry")
        for name in _MMCV_CNN_REGISTRIES.split()
    ],
    *[
        _renamed(f"{parent}.{name}", "mmengine.registry.MODELS", "merged into MODELS (mmcv 2.0)")
        for parent in ("mmcv.cnn.bricks", "mmcv.cnn.bricks.registry")
        for name in _MMCV_TRANSFORMER_REGISTRIES.split()
    ],
    _module("mmcv.cnn.builder", "mmengine.registry", "removed in mmcv 2.0", wholesale=True),
    _renamed("mmcv.cnn.MODELS", "mmengine.registry.MODELS", "mmengine's root model registry"),
    _renamed("mmcv.cnn.build_model_from_cfg", "mmengine.registry.build_model_from_cfg", "moved to mmengine"),
    # mmcv.utils: everything but a few mmcv-specific helpers moved (mmcv 1.x also exported it all as mmcv.*)
    *_moved(["mmcv", "mmcv.utils"], "mmengine.config", "Config ConfigDict DictAction", "moved to mmengine.config"),
    *_moved(["mmcv", "mmcv.utils"], "mmengine.registry", "Registry build_from_cfg", "moved to mmengine.registry"),
    *_moved(["mmcv", "mmcv.utils"], "mmengine.logging", "print_log", "moved to mmengine.logging"),
    *_moved(["mmcv", "mmcv.utils"], "mmengine.utils", _MMCV_UTILS_TO_MMENGINE_UTILS, "moved to mmengine.utils"),
    *_moved(["mmcv.utils"], "mmengine.utils.dl_utils", "TORCH_VERSION is_jit_tracing load_url", "moved"),
    *_moved(["mmcv.utils"], "mmengine.utils.dl_utils.parrots_wrapper", _PARROTS, "moved"),
    _module("mmcv.utils.parrots_wrapper", "mmengine.utils.dl_utils.parrots_wrapper", "moved", wholesale=True),
    _module("mmcv.utils.config", "mmengine.config.config", "moved", wholesale=True),
    _module("mmcv.utils.misc", "mmengine.utils.misc", "moved", wholesale=True),
    _module("mmcv.utils.registry", "mmengine.registry", "moved", wholesale=True),
    _by_hand(
        "mmcv.utils.get_logger",
        "mmengine.logging.MMLogger",
        "MMLogger.get_instance(name, log_file=..., log_level=...), or print_log(msg, logger='current')",
    ),
    _by_hand(
        "mmcv.get_logger", "mmengine.logging.MMLogger", "MMLogger.get_instance(name, log_file=..., log_level=...)"
    ),
    # mmcv.fileio, engine, device, onnx, tensorrt: removed
    _module("mmcv.fileio", "mmengine.fileio", "removed in mmcv 2.0: use mmengine.fileio", wholesale=True),
    *_moved(["mmcv"], "mmengine.fileio", _MMCV_FILEIO, "moved to mmengine.fileio"),
    _module(
        "mmcv.engine",
        "mmengine.runner.Runner",
        "removed in mmcv 2.0: testing runs in the Runner's test loop",
        wholesale=False,
    ),
    _module(
        "mmcv.device", "mmengine.device", "removed in mmcv 2.0: device helpers are in mmengine.device", wholesale=False
    ),
    _renamed("mmcv.device.get_device", "mmengine.device.get_device", "moved to mmengine.device"),
    _module("mmcv.onnx", "", "removed in mmcv 2.0: export with mmdeploy or torch.onnx", wholesale=False),
    _module("mmcv.tensorrt", "", "removed in mmcv 2.0: export with mmdeploy", wholesale=False),
    # mmseg 0.x / mmdet 2.x registries: a backbone for mmpose registers in mmpose's registry
    *[
        _renamed(f"mmseg.models.builder.{name}", "mmpose.registry.MODELS", _REGISTRY_SCOPE.format(pkg="mmseg"))
        for name in "BACKBONES NECKS HEADS LOSSES SEGMENTORS MODELS ATTENTION".split()
    ],
    *[
        _by_hand(f"mmseg.models.builder.{name}", "mmpose.registry.MODELS.build", "MODELS.build(cfg)")
        for name in "build_backbone build_neck build_head build_loss build_segmentor".split()
    ],
    *[
        _renamed(f"mmdet.models.builder.{name}", "mmpose.registry.MODELS", _REGISTRY_SCOPE.format(pkg="mmdet"))
        for name in "BACKBONES NECKS HEADS LOSSES".split()
    ],
    _module(
        "mmseg.ops",
        "mmseg.models.utils",
        "removed in mmseg 1.x: its encoding and wrappers moved to mmseg.models.utils",
        wholesale=False,
    ),
    *[
        _renamed(
            old,
            "mmpose.models.utils.ops.resize",
            "mmpose ships the same resize (mmseg 1.x: mmseg.models.utils.resize)",
        )
        for old in ("mmseg.ops.resize", "mmseg.ops.wrappers.resize")
    ],
    _by_hand(
        "mmseg.ops.Upsample",
        "mmseg.models.utils.Upsample",
        "mmseg 1.x only; without mmseg use torch.nn.Upsample or resize",
    ),
    _by_hand(
        "mmseg.utils.get_root_logger",
        "mmengine.logging.MMLogger",
        "removed in mmseg 1.x: MMLogger.get_current_instance(), or print_log(msg, logger='current')",
    ),
    _module(
        "mmseg.core",
        "",
        "removed in mmseg 1.x: hooks/optimizers in mmseg.engine, evaluation in mmseg.evaluation",
        wholesale=False,
    ),
    _module(
        "mmpose.core",
        "",
        "removed in mmpose 1.x: codecs in mmpose.codecs, evaluation in mmpose.evaluation",
        wholesale=False,
    ),
)

_RULES_BY_OLD: dict[str, PortRule] = {rule.old: rule for rule in PORT_RULES}


def lookup(path: str) -> tuple[PortRule, str, str] | None:
    """The rule for a dotted path, as (rule, old path it covers, new path); None when it still exists.

    The longest rule prefix wins: ``mmcv.runner.load_checkpoint`` takes its own
    rule over the one for ``mmcv.runner``; a module rule covers the names under it.
    """
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        rule = _RULES_BY_OLD.get(".".join(parts[:end]))
        if rule is None:
            continue
        rest = parts[end:]
        if not rest or not rule.module:
            return rule, rule.old, rule.new
        old = ".".join(parts[: end + 1])
        new = f"{rule.new}.{rest[0]}" if rule.fixable else rule.new
        return rule, old, new
    return None
