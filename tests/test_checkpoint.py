"""Checkpoint loading: nested layouts, prefix matching, refusals that leave the model untouched."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from adaptkit.errors import CheckpointError
from adaptkit.mm.checkpoint import LoadReport, load_checkpoint, match_keys, read_state_dict
from adaptkit.zoo.sctnet import sctnet_s


class Small(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 2)


class Wrapper(nn.Module):
    """A model whose keys carry a prefix of their own (``body.``)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Small()


def _filled(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` with distinct random values (BN buffers included)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            out[key] = torch.randn(value.shape, generator=gen)
        else:
            out[key] = torch.full_like(value, seed)
    return out


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_original_sctnet_layout_loads_backbone_keys(tmp_path: Path) -> None:
    weights = _filled(sctnet_s(), seed=1)
    state = {f"backbone.{k}": v for k, v in weights.items()}
    state["decode_head.conv_seg.weight"] = torch.randn(19, 128, 1, 1)
    state["auxiliary_head.conv_seg.bias"] = torch.randn(19)
    meta = {"mmcv_version": "1.6.0", "CLASSES": ("road", "sidewalk"), "hook_msgs": {"best_score": np.float64(0.79)}}
    path = tmp_path / "sctnet-s_seg50.pth"
    torch.save({"meta": meta, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)

    model = sctnet_s()
    report = load_checkpoint(model, path)

    assert report.complete
    assert (report.source_key, report.prefix_stripped, report.prefix_added) == ("state_dict", "backbone.", "")
    assert len(report.loaded) == len(weights) == 244
    assert set(report.ignored) == {"decode_head.conv_seg.weight", "auxiliary_head.conv_seg.bias"}
    assert _same(model.state_dict(), weights)


def test_model_key_with_module_prefix(tmp_path: Path) -> None:
    weights = _filled(Small(), seed=2)
    path = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in weights.items()}, "epoch": 3}, path)
    model = Small()
    report = load_checkpoint(model, path)
    assert report.complete and report.source_key == "model" and report.prefix_stripped == "module."
    assert _same(model.state_dict(), weights)


def test_top_level_state_dict(tmp_path: Path) -> None:
    weights = _filled(Small(), seed=3)
    path = tmp_path / "plain.pth"
    torch.save(weights, path)
    model = Small()
    report = load_checkpoint(model, path)
    assert report.complete and (report.source_key, report.prefix_stripped, report.prefix_added) == ("", "", "")
    assert report.ignored == ()
    assert _same(model.state_dict(), weights)


def test_wrapper_model_gets_its_prefix_added(tmp_path: Path) -> None:
    weights = _filled(Small(), seed=4)
    path = tmp_path / "small.pth"
    torch.save({"state_dict": {f"module.backbone.{k}": v for k, v in weights.items()}}, path)
    model = Wrapper()
    report = load_checkpoint(model, path)
    assert report.complete
    assert (report.prefix_stripped, report.prefix_added) == ("module.backbone.", "body.")
    assert _same(model.body.state_dict(), weights)


def test_sctnet_into_a_wrapper() -> None:
    weights = {f"backbone.{k}": v for k, v in _filled(sctnet_s(), seed=5).items()}
    model = nn.Module()
    model.body = sctnet_s()
    report = load_checkpoint(model, {"state_dict": weights})
    assert report.complete and (report.prefix_stripped, report.prefix_added) == ("backbone.", "body.")
    assert torch.equal(model.body.layer5.attn_l.kv3, weights["backbone.layer5.attn_l.kv3"])


def test_mismatched_shapes_are_refused_and_never_loaded(tmp_path: Path) -> None:
    weights = _filled(Small(width=8), seed=6)  # conv/bn/fc all wider than the model's
    weights["fc.bias"] = torch.randn(2)  # the one tensor that fits
    path = tmp_path / "wide.pth"
    torch.save(weights, path)
    model = Small(width=4)
    before = _snapshot(model)
    with pytest.raises(
        CheckpointError,
        match=r"0 missing, 0 unexpected, 7 shape-mismatched keys \(2 would load\); pass allow_partial=True",
    ):
        load_checkpoint(model, path)
    assert _same(model.state_dict(), before)

    report = load_checkpoint(model, path, allow_partial=True)
    assert not report.complete
    assert set(report.loaded) == {"fc.bias", "bn.num_batches_tracked"} and report.missing == ()
    assert ("conv.weight", (8, 3, 3, 3), (4, 3, 3, 3)) in report.mismatched
    assert torch.equal(model.fc.bias, weights["fc.bias"])
    assert torch.equal(model.conv.weight, before["conv.weight"])


def test_missing_keys_refused_and_model_untouched(tmp_path: Path) -> None:
    weights = _filled(sctnet_s(), seed=7)
    partial = {f"backbone.{k}": v for k, v in weights.items() if not k.startswith("spp.")}
    path = tmp_path / "no_spp.pth"
    torch.save({"state_dict": partial}, path)
    model = sctnet_s()
    before = _snapshot(model)
    # a missing num_batches_tracked is no missing weight: torch starts it at 0
    n_spp = sum(k.startswith("spp.") and not k.endswith("num_batches_tracked") for k in weights)
    with pytest.raises(CheckpointError, match=rf"no_spp\.pth does not fit SCTNet: {n_spp} missing, 0 unexpected"):
        load_checkpoint(model, path)
    assert _same(model.state_dict(), before)

    report = load_checkpoint(model, path, allow_partial=True)
    assert len(report.missing) == n_spp and all(k.startswith("spp.") for k in report.missing)
    assert len(report.loaded) == len(partial)
    assert torch.equal(model.layer4.attn_l.kv, weights["layer4.attn_l.kv"])
    assert torch.equal(model.spp.shortcut[2].weight, before["spp.shortcut.2.weight"])


def test_extra_keys_are_accepted_and_named_by_default_and_refused_when_strict() -> None:
    weights = _filled(Small(), seed=8)
    state = {**weights, "extra.weight": torch.zeros(3)}
    model = Small()
    report = load_checkpoint(model, state)
    assert report.unexpected == ("extra.weight",) and not report.complete
    assert _same(model.state_dict(), weights)
    with pytest.raises(CheckpointError, match=r"0 missing, 1 unexpected, 0 shape-mismatched.*unexpected: extra.weight"):
        load_checkpoint(Small(), state, strict=True)


def test_a_classifier_checkpoint_loads_into_its_features_backbone() -> None:
    """A classifier's fc.* keys are extras: reported, never a reason to refuse or to allow missing weights."""
    classifier = nn.Sequential()
    classifier.add_module("body", Small())
    state = {**_filled(Small(), seed=9), "head.fc.weight": torch.zeros(10, 4), "head.fc.bias": torch.zeros(10)}
    report = load_checkpoint(Small(), state)
    assert set(report.unexpected) == {"head.fc.weight", "head.fc.bias"} and report.missing == ()


def test_missing_weights_are_refused_and_named() -> None:
    weights = _filled(Small(), seed=10)
    del weights["conv.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing, .*missing: conv.weight"):
        load_checkpoint(Small(), weights)


def test_a_missing_num_batches_tracked_is_not_a_missing_weight() -> None:
    weights = {k: v for k, v in _filled(Small(), seed=11).items() if not k.endswith("num_batches_tracked")}
    model = Small()
    report = load_checkpoint(model, weights)
    assert report.missing == () and torch.equal(model.conv.weight, weights["conv.weight"])


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda t: t.to(torch.complex64), "complex64 for float32"),
        (lambda t: t > 0, "bool for float32"),
        (lambda t: t.to(torch.int64), "int64 for float32"),
        (lambda t: t.to_sparse(), "sparse_coo float32"),
        (lambda t: torch.empty_like(t, device="meta"), "meta float32"),
    ],
)
def test_odd_tensors_are_refused_before_anything_loads(tmp_path: Path, make, words) -> None:
    weights = _filled(Small(), seed=12)
    weights["conv.weight"] = make(weights["conv.weight"])
    model = Small()
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match=rf"conv.weight \({words}"):
        load_checkpoint(model, weights, allow_partial=True)
    assert _same(model.state_dict(), before)
    if words.startswith("meta"):
        return  # a meta tensor cannot be saved with its data
    path = tmp_path / "odd.pth"
    torch.save(weights, path)
    with pytest.raises(CheckpointError, match="conv.weight"):
        load_checkpoint(Small(), path)


def test_a_raw_pickle_says_one_line_and_no_warning(tmp_path: Path, recwarn) -> None:
    import pickle

    path = tmp_path / "raw.pth"
    path.write_bytes(pickle.dumps({"conv.weight": [1, 2, 3]}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(Small(), path)
    assert "\n" not in str(info.value)
    assert not [w for w in recwarn if "torch" in str(w.filename)]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=r"checkpoint .*nope\.pth. does not exist"):
        load_checkpoint(Small(), path)


def test_directory_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is not a file"):
        read_state_dict(tmp_path)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"garbage\.pth is corrupt or not a PyTorch file"):
        read_state_dict(path)


def test_truncated_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save(_filled(Small(), seed=9), good)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"truncated\.pth is corrupt or not a PyTorch file"):
        read_state_dict(bad)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pth is empty"):
        read_state_dict(path)


def test_file_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "meta_only.pth"
    torch.save({"meta": {"epoch": 3}, "state_dict": {}, "note": "no weights"}, path)
    with pytest.raises(CheckpointError, match=r"meta_only\.pth holds no tensors"):
        read_state_dict(path)


class NotAllowed:
    pass


def test_unsafe_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "obj": NotAllowed()}, path)
    with pytest.raises(CheckpointError, match=r"holds a .*NotAllowed object, which weights_only loading refuses"):
        read_state_dict(path)


def test_read_state_dict_objects() -> None:
    tensors, key = read_state_dict({"module": {"a": torch.ones(1)}, "step": 1})
    assert key == "module" and list(tensors) == ["a"]
    tensors, key = read_state_dict(Small())
    assert key == "" and "bn.running_var" in tensors
    with pytest.raises(CheckpointError, match="cannot read a checkpoint from a int"):
        read_state_dict(3)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="the checkpoint object holds no tensors"):
        read_state_dict({"state_dict": {"a": 1}})


def test_read_state_dict_accepts_str_and_pathlike(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"w": torch.ones(2)}, path)
    assert list(read_state_dict(str(path))[0]) == ["w"]
    assert list(read_state_dict(os.fspath(path))[0]) == ["w"]


def test_match_keys_generic_prefixes() -> None:
    model_keys = ["net.stage1.conv.weight", "net.stage1.conv.bias", "net.head.weight"]
    state = {f"encoder.trunk.{k[4:]}": torch.zeros(1) for k in model_keys}
    state["encoder.other.weight"] = torch.zeros(1)
    mapping, strip, add = match_keys(state, model_keys)
    assert (strip, add) == ("encoder.trunk.", "net.")
    assert mapping == {f"encoder.trunk.{k[4:]}": k for k in model_keys}


def test_match_keys_prefers_identity_and_handles_no_overlap() -> None:
    keys = ["a.weight", "b.weight"]
    assert match_keys(dict.fromkeys(keys, torch.zeros(1)), keys) == ({k: k for k in keys}, "", "")
    assert match_keys({"x": torch.zeros(1)}, keys) == ({}, "", "")


def test_no_overlap_at_all_is_refused() -> None:
    model = Small()
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match=r"8 missing, 1 unexpected, 0 shape-mismatched keys \(0 would load\)"):
        load_checkpoint(model, {"something.else": torch.zeros(2)})
    assert _same(model.state_dict(), before)


def test_report_is_frozen() -> None:
    report = LoadReport((), (), (), (), "", "", "")
    assert report.complete
    with pytest.raises(AttributeError):
        report.loaded = ("x",)  # type: ignore[misc]
