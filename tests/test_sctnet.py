"""SCTNet port: exact parameter counts, output structure and shapes, original key names."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from adaptkit.errors import BuildError
from adaptkit.zoo.sctnet import SCTNet, drop_path, sctnet_b, sctnet_s

MODULE_PARAMS = {
    "b": {
        "stem": 38_976,
        "layer1": 148_224,
        "layer2": 526_208,
        "layer3": 2_100_992,
        "layer3_2": 1_410_560,
        "convdown4": 1_181_184,
        "layer4": 5_180_416,
        "layer5": 5_180_416,
        "spp": 1_074_816,
    },
    "s": {
        "stem": 10_272,
        "layer1": 37_248,
        "layer2": 132_032,
        "layer3": 526_208,
        "layer3_2": 410_368,
        "convdown4": 295_680,
        "layer4": 1_410_560,
        "layer5": 1_410_560,
        "spp": 271_168,
    },
}
TOTAL_PARAMS = {"s": 4_504_096, "b": 16_841_792}
BUILDERS = {"s": sctnet_s, "b": sctnet_b}
BASE = {"s": 32, "b": 64}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def meta_models() -> dict[str, SCTNet]:
    with torch.device("meta"):
        return {name: build() for name, build in BUILDERS.items()}


@pytest.mark.parametrize("variant", ["s", "b"])
def test_total_params_exact(meta_models: dict[str, SCTNet], variant: str) -> None:
    assert _count(meta_models[variant]) == TOTAL_PARAMS[variant]


@pytest.mark.parametrize("variant", ["s", "b"])
def test_per_module_params(meta_models: dict[str, SCTNet], variant: str) -> None:
    model = meta_models[variant]
    counts = {name: _count(getattr(model, name)) for name in MODULE_PARAMS[variant]}
    assert counts == MODULE_PARAMS[variant]
    assert sum(counts.values()) == TOTAL_PARAMS[variant]  # nothing outside the table


def test_stem_is_an_alias_not_a_second_copy(meta_models: dict[str, SCTNet]) -> None:
    model = meta_models["s"]
    assert model.stem is model.conv1
    assert not any(key.startswith("stem.") for key in model.state_dict())


@pytest.mark.parametrize("variant", ["s", "b"])
@pytest.mark.parametrize(("height", "width"), [(640, 640), (512, 1024)])
def test_output_structure_and_shapes_meta(
    meta_models: dict[str, SCTNet], variant: str, height: int, width: int
) -> None:
    model = meta_models[variant].eval()
    c = BASE[variant]
    image = torch.empty(2, 3, height, width, device="meta")
    out = model(image)
    assert isinstance(out, list) and len(out) == 3
    x_out, x2, (img, (x_out_again, x5, x3)) = out
    assert img is image
    assert x_out_again is x_out
    assert tuple(x_out.shape) == (2, 4 * c, height // 8, width // 8)
    assert tuple(x2.shape) == (2, 2 * c, height // 8, width // 8)
    assert tuple(x5.shape) == (2, 8 * c, height // 32, width // 32)
    assert tuple(x3.shape) == (2, 4 * c, height // 16, width // 16)


def test_b_shapes_from_the_facts_table(meta_models: dict[str, SCTNet]) -> None:
    out = meta_models["b"].eval()(torch.empty(2, 3, 640, 640, device="meta"))
    shapes = [tuple(out[0].shape), tuple(out[1].shape), tuple(out[2][0].shape)]
    shapes += [tuple(t.shape) for t in out[2][1]]
    assert shapes == [
        (2, 256, 80, 80),
        (2, 128, 80, 80),
        (2, 3, 640, 640),
        (2, 256, 80, 80),
        (2, 512, 20, 20),
        (2, 256, 40, 40),
    ]


def test_train_mode_on_meta_runs(meta_models: dict[str, SCTNet]) -> None:
    model = meta_models["b"].train()
    out = model(torch.empty(2, 3, 512, 1024, device="meta"))
    assert tuple(out[0].shape) == (2, 256, 64, 128)
    model.eval()


def test_real_forward_eval_is_finite_and_deterministic() -> None:
    torch.manual_seed(0)
    model = sctnet_s().eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert tuple(first[0].shape) == (1, 128, 16, 16)
    assert torch.isfinite(first[0]).all() and torch.isfinite(first[2][1][1]).all()
    assert torch.equal(first[0], second[0])  # no dropout / drop path in eval


def test_real_train_step_batch_two() -> None:
    torch.manual_seed(0)
    model = sctnet_s().train()
    out = model(torch.randn(2, 3, 64, 64))
    loss = out[0].square().mean() + out[1].mean() + out[2][1][1].mean() + out[2][1][2].mean()
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.layer5.attn_l.kv.grad.abs().sum() > 0  # the attention kernels learn


def test_global_pool_branch_needs_batch_above_one_in_train_mode() -> None:
    model = sctnet_s().train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(torch.randn(1, 3, 64, 64))


def test_init() -> None:
    torch.manual_seed(0)
    model = sctnet_s()
    attn = model.layer4.attn_l
    assert attn.kv.shape == (64, 256, 7, 1) and attn.kv3.shape == (64, 256, 1, 7)
    assert attn.kv.std().item() == pytest.approx(0.001, rel=0.05)
    assert attn.kv3.std().item() == pytest.approx(0.001, rel=0.05)
    bn = model.spp.scale0[0]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    conv = model.layer2[0].conv1
    assert torch.all(conv.bias == 0)
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.1)
    assert model.layer3_2.mlp_l.norm.eps == 1e-6 and model.layer3_2.attn_l.norm.eps == 1e-5


def test_drop_path() -> None:
    x = torch.ones(1000, 4, 2, 2)
    assert drop_path(x, 0.5, training=False) is x
    assert drop_path(x, 0.0, training=True) is x
    torch.manual_seed(0)
    y = drop_path(x, 0.25, training=True)
    per_sample = y.flatten(1)
    kept = per_sample[per_sample != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1.0 / 0.75))  # survivors are rescaled
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)  # whole samples dropped
    assert 0.18 < (per_sample[:, 0] == 0).float().mean().item() < 0.32


def test_drop_path_rate_reaches_every_cfblock() -> None:
    model = sctnet_s(drop_path_rate=0.2)
    assert [m.drop_path.rate for m in (model.layer3_2, model.layer4, model.layer5)] == [0.2, 0.2, 0.2]
    assert isinstance(sctnet_s(drop_path_rate=0.0).layer4.drop_path, nn.Identity)


def test_state_dict_keys_follow_the_original_backbone(meta_models: dict[str, SCTNet]) -> None:
    keys = list(meta_models["b"].state_dict())
    assert keys[:3] == ["conv1.0.weight", "conv1.0.bias", "conv1.1.weight"]
    expected = {
        "conv1.3.weight",
        "conv1.4.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer1.1.bn2.running_var",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.bias",
        "layer3_2.attn_l.kv",
        "layer3_2.attn_l.kv3",
        "layer3_2.attn_l.norm.weight",
        "layer3_2.mlp_l.norm.running_mean",
        "layer3_2.mlp_l.conv1.weight",
        "layer3_2.mlp_l.conv2.bias",
        "convdown4.0.weight",
        "convdown4.1.running_mean",
        "layer5.attn_l.kv3",
        "spp.scale1.1.weight",
        "spp.scale1.3.weight",
        "spp.scale4.3.bias",
        "spp.scale0.0.weight",
        "spp.scale0.2.weight",
        "spp.process4.2.weight",
        "spp.compression.0.weight",
        "spp.compression.2.weight",
        "spp.shortcut.2.bias",
    }
    assert expected <= set(keys)
    assert not any(k.startswith("layer1.0.downsample") for k in keys)  # c -> c needs no shortcut conv
    assert len(keys) == 244
    tops = list(dict.fromkeys(k.split(".")[0] for k in keys))
    assert tops == ["conv1", "layer1", "layer2", "layer3", "layer3_2", "convdown4", "layer4", "layer5", "spp"]


def test_constructors_accept_overrides() -> None:
    with torch.device("meta"):
        model = sctnet_s(in_channels=1, num_heads=4)
    assert model.conv1[0].in_channels == 1 and model.layer4.attn_l.num_heads == 4
    out = model(torch.empty(2, 1, 64, 64, device="meta"))
    assert tuple(out[0].shape) == (2, 128, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_heads": 3}, "num_heads must divide the 64 attention channels"),
        ({"base_channels": 0}, "base_channels must be a positive integer"),
        ({"drop_path_rate": 1.0}, r"drop_path_rate must lie in \[0, 1\)"),
        ({"drop_rate": -0.1}, r"drop_rate must lie in \[0, 1\)"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(BuildError, match=match):
        SCTNet(**kwargs)  # type: ignore[arg-type]
