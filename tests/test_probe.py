"""The shape probe on small hand-made backbones: layouts, strides, modes, state, errors."""

from __future__ import annotations

import dataclasses
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import adaptkit
from adaptkit import InputShapeError, Layout, OptionError, ProbeError, ProbeMode
from adaptkit.core.probing import TraceMode, probe

# ---------------------------------------------------------------------------- backbones


def conv(cin: int, cout: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class Pyramid(nn.Module):
    """Stride 4, 8, 16 maps; returns them in whatever container ``pack`` builds."""

    def __init__(self, pack=lambda a, b, c: [a, b, c]) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv(3, 8, 2), conv(8, 8, 2))
        self.stage2 = conv(8, 16, 2)
        self.stage3 = conv(16, 32, 2)
        self.pack = pack

    def forward(self, x: torch.Tensor):
        a = self.stem(x)
        b = self.stage2(a)
        c = self.stage3(b)
        return self.pack(a, b, c)


class DictWithNHWC(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = Pyramid()

    def forward(self, x):
        a, b, c = self.body(x)
        return {"stage1": a, "stage2": b.permute(0, 2, 3, 1), "stage3": c}


class NHWCOnly(nn.Module):
    """Stride 4, 64 channels, channels last: at 256x256 the output is (B, 64, 64, 64)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 64, 4, 4)
        self.norm = nn.LayerNorm(64)

    def forward(self, x):
        return self.norm(self.patch(x).permute(0, 2, 3, 1))


class TinyViT(nn.Module):
    """Patch-16 tokens, an optional class token, a fixed position table when ``fixed_size``."""

    def __init__(self, class_token: bool = True, dim: int = 24, fixed_size: int | None = None) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 16, 16)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.pos = nn.Parameter(torch.zeros(1, (fixed_size // 16) ** 2 + int(class_token), dim)) if fixed_size else None
        self.block = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        if self.pos is not None:
            tokens = tokens + self.pos  # only the size it was built for
        return [tokens + self.block(tokens)]


Stages = namedtuple("Stages", ["low", "high"])


@dataclasses.dataclass
class Output:
    features: list
    logits: torch.Tensor


class WithHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = Pyramid()
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        a, b, c = self.body(x)
        return Output(features=[a, c], logits=self.fc(c.mean((2, 3))))


class Unpadded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3)
        self.c2 = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.c2(self.c1(x))


class CallsItem(nn.Module):
    """Stride 8 and 16 maps, with a Python branch on a tensor value."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Pyramid()

    def forward(self, x):
        a, b, c = self.body(x)
        if b.mean().item() > 1e9:
            b = b * 0
        return b, c


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = conv(3, 8, 2)

    def forward(self, x):
        y = self.body(x)
        kept = y[y >= 0]  # boolean-mask indexing: nonzero under the hood
        return y, kept.sum()


class SCTLike(nn.Module):
    """SCTNet's output structure: [x_out, x2, [img, [x_out, x5, x3]]]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Pyramid()

    def forward(self, x):
        a, b, c = self.body(x)
        return [a, b, [x, [a, c, b]]]


class Block(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn1(self.conv1(x)))


class Broken(nn.Module):
    """layer2 expects 3 channels more than layer1 gives: a genuine crash, on meta and real tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(Block(3, 5))
        self.layer2 = nn.Sequential(Block(3, 8))

    def forward(self, x):
        return self.layer2(self.layer1(x))


class RaisesInside(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv(3, 4)
        self.neck = Refuses()

    def forward(self, x):
        return self.neck(self.stem(x))


class Refuses(nn.Module):
    def forward(self, x):
        raise ValueError("neck refuses every input")


class TrainState(nn.Module):
    """BatchNorm, Dropout, a frozen (eval) sub-module and a plain tensor attribute it rewrites."""

    def __init__(self, item: bool = False) -> None:
        super().__init__()
        self.stem = conv(3, 8, 2)
        self.frozen = conv(8, 8)
        self.drop = nn.Dropout(0.5)
        self.out = conv(8, 16, 2)
        self.item = item
        self.scale = torch.ones(1)  # neither parameter nor buffer

    def forward(self, x):
        y = self.drop(self.frozen(self.stem(x)))
        self.scale = self.scale * 2
        if self.item and y.sum().item() > 1e12:
            y = y * 0
        return self.out(y) * torch.rand(1).to(y.device).add(1)


def state_of(model: nn.Module) -> dict:
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "params": {k: (p.data_ptr(), id(p)) for k, p in model.named_parameters()},
        "flags": {k: m.training for k, m in model.named_modules()},
        "attrs": {k: id(getattr(m, "scale", None)) for k, m in model.named_modules()},
        "rng": torch.get_rng_state(),
    }


def assert_same_state(before: dict, model: nn.Module) -> None:
    after = state_of(model)
    assert before["tensors"].keys() == after["tensors"].keys()
    for key, value in before["tensors"].items():
        assert torch.equal(value, after["tensors"][key]), key
    assert before["params"] == after["params"]
    assert before["flags"] == after["flags"]
    assert before["attrs"] == after["attrs"]
    assert torch.equal(before["rng"], after["rng"])


# ---------------------------------------------------------------------------- layouts and strides


def test_list_output_strides_channels_and_params():
    model = Pyramid()
    result = adaptkit.probe(model, "2x3x640x640")
    assert result.mode is ProbeMode.META and result.fallback_reason is None
    assert [f.path for f in result.features] == ["0", "1", "2"]
    assert [f.shape for f in result.features] == [(2, 8, 160, 160), (2, 16, 80, 80), (2, 32, 40, 40)]
    assert [f.stride for f in result.features] == [(4, 4), (8, 8), (16, 16)]
    assert all(isinstance(s, int) for f in result.features for s in f.stride)
    assert [f.channels for f in result.features] == [8, 16, 32]
    assert all(f.layout is Layout.NCHW and f.is_spatial for f in result.features)
    assert result.params == sum(p.numel() for p in model.parameters())
    assert result.input_shape == (2, 3, 640, 640)
    assert result.max_stride == 16 and result.layers is None
    assert result.features[0].dtype == "float32"


def test_dict_output_with_an_nhwc_entry():
    result = probe(DictWithNHWC(), (1, 3, 256, 320))
    stage2 = result.feature("stage2")
    assert stage2.layout is Layout.NHWC
    assert stage2.shape == (1, 32, 40, 16)
    assert stage2.channels == 16 and stage2.spatial == (32, 40) and stage2.stride == (8, 8)
    assert result.feature("stage1").layout is Layout.NCHW
    assert result.feature("stage3").stride == (16, 16)


def test_nhwc_when_channels_equal_height():
    spec = probe(NHWCOnly(), "1x3x256x256").features[0]
    assert spec.shape == (1, 64, 64, 64)
    assert spec.layout is Layout.NHWC
    assert spec.channels == 64 and spec.spatial == (64, 64) and spec.stride == (4, 4)


def test_tokens_with_a_class_token():
    spec = probe(TinyViT(class_token=True), "2x3x224x224").feature("0")
    assert spec.shape == (2, 197, 24)
    assert spec.layout is Layout.NLC
    assert spec.prefix_tokens == 1
    assert spec.stride == (16, 16) and spec.spatial == (14, 14) and spec.channels == 24


def test_tokens_without_prefix_on_a_non_square_input():
    spec = probe(TinyViT(class_token=False), "1x3x256x192").feature("0")
    assert spec.layout is Layout.NLC
    assert spec.prefix_tokens == 0
    assert spec.spatial == (16, 12) and spec.stride == (16, 16) and spec.shape == (1, 192, 24)


def test_fixed_size_model_is_described_from_one_size():
    # the position table fits 224x224 only: the second probe fails, the first still tells the layout
    result = probe(TinyViT(class_token=True, fixed_size=224), "2x3x224x224")
    spec = result.features[0]
    assert result.mode is ProbeMode.META
    assert spec.layout is Layout.NLC and spec.prefix_tokens == 1 and spec.stride == (16, 16)


def test_namedtuple_output():
    result = probe(Pyramid(pack=lambda a, b, c: Stages(low=a, high=c)), "1x3x128x128")
    assert [f.path for f in result.features] == ["low", "high"]
    assert result.feature("high").stride == (16, 16)


def test_dataclass_output_and_a_non_spatial_vector():
    result = probe(WithHead(), "2x3x128x192")
    assert [f.path for f in result.features] == ["features.0", "features.1", "logits"]
    logits = result.feature("logits")
    assert logits.layout is Layout.OTHER
    assert logits.spatial is None and logits.stride == (0, 0) and not logits.is_spatial
    assert logits.shape == (2, 10) and logits.channels == 10
    assert result.feature("features.1").spatial == (8, 12)
    assert result.max_stride == 16


def test_unpadded_convs_give_non_integer_strides():
    spec = probe(Unpadded(), "1x3x64x96").features[0]
    assert spec.shape == (1, 4, 60, 92)
    assert spec.layout is Layout.NCHW
    assert spec.stride == pytest.approx((64 / 60, 96 / 92))
    assert all(isinstance(s, float) for s in spec.stride)


def test_upsampling_gives_a_stride_below_one():
    model = nn.Sequential(nn.ConvTranspose2d(8, 4, 4, 2, 1), nn.ConvTranspose2d(4, 4, 4, 2, 1))
    spec = probe(model, "1x8x16x12").features[0]
    assert spec.shape == (1, 4, 64, 48) and spec.stride == (0.25, 0.25)


def test_second_size_override():
    result = probe(Pyramid(), "1x3x256x256", second_size=(320, 384))
    assert [f.stride for f in result.features] == [(4, 4), (8, 8), (16, 16)]


def test_input_passthrough_and_repeated_tensor():
    result = probe(SCTLike(), "2x3x640x640")
    assert [f.path for f in result.features] == ["0", "1", "2.0", "2.1.0", "2.1.1", "2.1.2"]
    image = result.feature("2.0")
    assert image.is_input and image.alias_of is None and image.stride == (1, 1) and image.channels == 3
    assert result.feature("2.1.0").alias_of == "0" and not result.feature("2.1.0").is_input
    assert result.feature("2.1.2").alias_of == "1"
    assert result.feature("2.1.1").alias_of is None
    assert not any(f.is_input for f in result.features if f.path != "2.0")
    assert result.max_stride == 16  # the input passthrough does not count


def test_same_shape_is_not_an_alias():
    class Twins(nn.Module):
        def forward(self, x):
            return x * 1, x * 1, x

    result = probe(Twins(), "1x3x32x32", mode="real")
    assert [f.alias_of for f in result.features] == [None, None, None]
    assert [f.is_input for f in result.features] == [False, False, True]


# ---------------------------------------------------------------------------- fallback to real tensors


def test_item_falls_back_to_a_small_real_input():
    model = CallsItem()
    real_sizes = []  # outside the model: the probe restores everything the model holds
    model.register_forward_pre_hook(
        lambda _m, args: real_sizes.append(tuple(args[0].shape[2:])) if not args[0].is_meta else None
    )
    result = probe(model, "2x3x640x640")
    assert result.mode is ProbeMode.REAL
    assert ".item()" in result.fallback_reason and "top-level forward" in result.fallback_reason
    # the real forwards ran small, and the shapes are reported at the requested size
    assert real_sizes == [(128, 128), (192, 256)]
    assert [f.shape for f in result.features] == [(2, 16, 80, 80), (2, 32, 40, 40)]
    assert [f.stride for f in result.features] == [(8, 8), (16, 16)]


@pytest.mark.parametrize("size", [(250, 330), (641, 479), (512, 1000)])
def test_real_fallback_extrapolates_exactly(size):
    """Shapes from the small real inputs equal those of a real forward at the requested size."""
    model = CallsItem()
    h, w = size
    result = probe(model, (1, 3, h, w))
    assert result.mode is ProbeMode.REAL
    with torch.no_grad():
        b, c = Pyramid.forward(model.body, torch.zeros(1, 3, h, w))[1:]
    assert [f.shape for f in result.features] == [tuple(b.shape), tuple(c.shape)]


def test_data_dependent_op_falls_back():
    result = probe(DataDependent(), "1x3x64x64")
    assert result.mode is ProbeMode.REAL
    assert "data-dependent" in result.fallback_reason
    assert result.features[0].stride == (2, 2)
    assert result.features[1].layout is Layout.OTHER and result.features[1].shape == ()


def test_meta_only_mode_refuses_what_meta_cannot_run():
    with pytest.raises(ProbeError, match=r"meta trace failed .*\.item\(\).*mode='auto' or 'real'"):
        probe(CallsItem(), "1x3x64x64", mode="meta")


def test_real_mode_on_request():
    result = probe(Pyramid(), "1x3x320x256", mode=TraceMode.REAL)
    assert result.mode is ProbeMode.REAL and result.fallback_reason is None
    assert [f.shape for f in result.features] == [(1, 8, 80, 64), (1, 16, 40, 32), (1, 32, 20, 16)]


def test_meta_probe_runs_no_real_forward_and_reads_no_weights():
    class Heavy(nn.Module):
        """Seconds of real arithmetic at 2048x2048; it counts the real forwards it sees."""

        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 64, 64, 3, padding=1) for i in range(6)])
            self.real_calls = 0

        def forward(self, x):
            if x.device.type != "meta":
                self.real_calls += 1
            return self.convs(x)

    model = Heavy()
    pointers = {k: p.data_ptr() for k, p in model.named_parameters()}
    weights = {k: p.detach().clone() for k, p in model.named_parameters()}
    started = time.perf_counter()
    result = probe(model, "1x3x2048x2048")
    assert time.perf_counter() - started < 10  # a real forward here takes minutes
    assert result.mode is ProbeMode.META and model.real_calls == 0
    assert result.features[0].shape == (1, 64, 2048, 2048)
    assert {k: p.data_ptr() for k, p in model.named_parameters()} == pointers
    assert all(torch.equal(p, weights[k]) for k, p in model.named_parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())


# ---------------------------------------------------------------------------- the model is left as it was


@pytest.mark.parametrize(
    ("model_kwargs", "mode", "expected"),
    [({}, "auto", ProbeMode.META), ({"item": True}, "auto", ProbeMode.REAL), ({}, "real", ProbeMode.REAL)],
)
def test_train_mode_state_is_unchanged(model_kwargs, mode, expected):
    torch.manual_seed(0)
    model = TrainState(**model_kwargs).train()
    model.frozen.eval()  # mixed flags must come back as they were, not all alike
    for _ in range(2):  # non-trivial running statistics
        model(torch.randn(2, 3, 32, 32))
    before = state_of(model)
    result = probe(model, "2x3x64x64", mode=mode, layers=True)
    assert result.mode is expected
    assert_same_state(before, model)
    assert model.stem[1].num_batches_tracked.item() == 2


def test_state_is_unchanged_after_a_crash():
    model = Broken().train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.fill_(0.5)
    before = state_of(model)
    with pytest.raises(ProbeError):
        probe(model, "2x3x64x64")
    assert_same_state(before, model)


def test_dropout_does_not_advance_the_rng():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Dropout(0.5)).train()
    torch.manual_seed(1)
    probe(model, "1x3x16x16", mode="real")
    after_probe = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(3), after_probe)


# ---------------------------------------------------------------------------- errors


def test_crash_names_the_module():
    with pytest.raises(
        ProbeError, match=r"backbone crashed in module 'layer2\.0\.conv1' \(Conv2d\) at input 2x3x64x64: .*channels"
    ) as info:
        probe(Broken(), "2x3x64x64")
    assert info.value.module == "layer2.0.conv1"
    assert "\n" not in str(info.value)


def test_crash_with_wrong_input_channels():
    with pytest.raises(
        ProbeError, match=r"'layer1\.0\.conv1' \(Conv2d\).*expected input\[1, 5, 32, 32\] to have 3 channels"
    ) as info:
        probe(Broken(), "1x5x32x32")
    assert info.value.module == "layer1.0.conv1"


def test_python_error_inside_a_sub_module():
    with pytest.raises(ProbeError, match=r"in module 'neck' \(Refuses\).*neck refuses every input") as info:
        probe(RaisesInside(), "1x3x32x32")
    assert info.value.module == "neck"


def test_no_tensor_output():
    class Nothing(nn.Module):
        def forward(self, x):
            return None

    with pytest.raises(ProbeError, match=r"^the backbone returned no tensor \(got NoneType\)"):
        probe(Nothing(), "1x3x8x8")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("2x3x640", "has 3 dimensions"),
        ("2x3x0x640", "zero or negative"),
        ("2x3xbigx640", "not a list of integers"),
        ((2, 3, -1, 4), "zero or negative"),
    ],
)
def test_bad_input_shapes(shape, message):
    with pytest.raises(InputShapeError, match=message):
        probe(Pyramid(), shape)


def test_bad_options():
    with pytest.raises(OptionError, match="unknown probe mode 'fast'"):
        probe(Pyramid(), "1x3x32x32", mode="fast")
    with pytest.raises(InputShapeError, match="second_size"):
        probe(Pyramid(), "1x3x32x32", second_size=(0, 3))
    with pytest.raises(OptionError, match="real_fallback_size"):
        probe(Pyramid(), "1x3x32x32", real_fallback_size=4)
    with pytest.raises(ProbeError, match="needs a torch.nn.Module"):
        probe("resnet", "1x3x32x32")


# ---------------------------------------------------------------------------- per-layer rows


def test_layer_rows():
    result = probe(SCTLike(), "2x3x128x128", layers=True)
    rows = {row.name: row for row in result.layers}
    assert rows["body.stage2.0"].type == "Conv2d"
    assert rows["body.stage2.0"].output_shape == (2, 16, 16, 16)
    assert rows["body.stage2.0"].depth == 3
    assert rows["body.stage2.0"].params == 8 * 16 * 9 + 16
    assert rows[""].type == "SCTLike" and rows[""].output_shape is None  # a nested list, not one tensor
    assert rows[""].params == result.params


def test_layer_rows_after_a_real_fallback():
    result = probe(CallsItem(), "1x3x96x64", layers=True)
    assert result.mode is ProbeMode.REAL
    rows = {row.name: row for row in result.layers}
    assert rows["body.stage3.0"].output_shape == (1, 32, 6, 4)


# ---------------------------------------------------------------------------- the shipped SCTNet


@pytest.mark.skipif(
    not (Path(adaptkit.__file__).parent / "zoo" / "sctnet.py").exists(),
    reason="adaptkit/zoo/sctnet.py is not there yet",
)
def test_sctnet_outputs_in_train_mode():
    from adaptkit.zoo import build_zoo_model

    model = build_zoo_model("sctnet-s").train()
    before = state_of(model)
    result = probe(model, "2x3x640x640")
    assert_same_state(before, model)
    assert result.mode is ProbeMode.META and result.params == 4_504_096
    got = {f.path: (f.shape, f.stride, f.is_input, f.alias_of) for f in result.features}
    assert got == {
        "0": ((2, 128, 80, 80), (8, 8), False, None),
        "1": ((2, 64, 80, 80), (8, 8), False, None),
        "2.0": ((2, 3, 640, 640), (1, 1), True, None),
        "2.1.0": ((2, 128, 80, 80), (8, 8), False, "0"),
        "2.1.1": ((2, 256, 20, 20), (32, 32), False, None),
        "2.1.2": ((2, 128, 40, 40), (16, 16), False, None),
    }


def test_tensors_a_forward_caches_are_undone():
    class Caches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.last = None

        def forward(self, x):
            self.last = self.conv(x)
            self.first_seen = x
            return self.last

    model = Caches()
    result = probe(model, "1x3x32x32", layers=True)
    assert result.mode is ProbeMode.META
    assert model.last is None and not hasattr(model, "first_seen")


# -- normalisations answer with their input's shape on meta, after torch's own checks ---------


class _Norms(nn.Module):
    def __init__(self, groups: int = 4, ln_width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.bn = nn.BatchNorm2d(8)
        self.groups = groups
        self.ln = nn.LayerNorm(ln_width)

    def forward(self, x):
        x = torch.nn.functional.group_norm(self.bn(self.conv(x)), self.groups)
        return self.ln(x.permute(0, 2, 3, 1))


def test_norm_models_probe_on_meta_with_their_shapes():
    result = probe(_Norms(), (2, 3, 64, 32))
    assert result.mode is ProbeMode.META
    (feature,) = result.features
    assert feature.shape == (2, 32, 16, 8) and feature.layout is Layout.NHWC and feature.stride == (2, 2)


@pytest.mark.parametrize(
    "model, shape, match",
    [
        (_Norms(groups=3), (2, 3, 64, 32), "divisible by num_groups"),
        (_Norms(ln_width=6), (2, 3, 64, 32), "normalized_shape"),
        (
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(3)).train(),
            (1, 3, 64, 32),
            "more than 1 value per channel",
        ),
    ],
)
def test_norm_checks_still_fail_broken_models(model, shape, match):
    with pytest.raises(ProbeError, match=match):
        probe(model, shape)
