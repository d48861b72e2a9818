"""The probe (meta, real fallback) and the reachability trace leave a model bit-identical.

timm-like cases written here: a submodule reused under two names (CoaT), a
tied weight, a lazy module, an attention-bias cache (LeViT,
EfficientFormer), a forward that writes its own parameters, counters,
plain tensor attributes and all three random generators.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.nn.parameter import UninitializedTensorMixin

from adaptkit import probe
from adaptkit.core.reach import unreached_parameters
from adaptkit.errors import ProbeError


def _value(t: torch.Tensor):
    if t.is_meta or isinstance(t, UninitializedTensorMixin):
        return None
    return t.detach().clone()


def fingerprint(model: nn.Module) -> dict:
    """Everything a probe could change: tensors under every name, module classes and attributes, RNGs."""
    tensors = {
        name: (id(t), type(t), t.device, t.dtype, t.requires_grad, _value(t))
        for name, t in (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False))
    }
    modules = [
        (
            name,
            type(m),
            m.training,
            sorted(vars(m)),
            {k: (type(v), repr(v)) for k, v in vars(m).items() if not k.startswith("_")},
        )
        for name, m in model.named_modules(remove_duplicate=False)
    ]
    hooks = [(name, len(m._forward_pre_hooks), len(m._forward_hooks)) for name, m in model.named_modules()]
    return dict(tensors=tensors, modules=modules, hooks=hooks)


def rng_states() -> tuple:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def assert_untouched(model: nn.Module, before: dict, rng_before: tuple) -> None:
    after = fingerprint(model)
    assert after["modules"] == before["modules"]
    assert after["hooks"] == before["hooks"]
    assert after["tensors"].keys() == before["tensors"].keys()
    for name, (ident, cls, device, dtype, grad, value) in before["tensors"].items():
        a_ident, a_cls, a_device, a_dtype, a_grad, a_value = after["tensors"][name]
        assert (a_ident, a_cls, a_device, a_dtype, a_grad) == (ident, cls, device, dtype, grad), name
        if value is not None:
            assert a_value is not None and torch.equal(a_value, value), name
    torch_state, py_state, np_state = rng_states()
    assert torch.equal(torch_state, rng_before[0])
    assert py_state == rng_before[1]
    assert np_state[0] == rng_before[2][0] and np.array_equal(np_state[1], rng_before[2][1])
    assert np_state[2:] == rng_before[2][2:]


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.norm = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.norm(self.conv(x)))


class Reused(nn.Module):
    """CoaT-like: one block registered under two names, and a tied 1x1 weight."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.shared = Block(8)
        self.again = self.shared
        self.proj_a = nn.Conv2d(8, 8, 1)
        self.proj_b = nn.Conv2d(8, 8, 1)
        self.proj_b.weight = self.proj_a.weight

    def forward(self, x):
        x = self.stem(x)
        return self.proj_b(self.again(self.proj_a(self.shared(x))))


class BiasCache(nn.Module):
    """LeViT-like: eval mode caches a gathered bias per device in a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.attention_biases = nn.Parameter(torch.randn(8, 4))
        self.attention_bias_cache: dict[str, torch.Tensor] = {}

    def get_bias(self, device: torch.device) -> torch.Tensor:
        if self.training:
            return self.attention_biases
        key = str(device)
        if key not in self.attention_bias_cache:
            self.attention_bias_cache[key] = self.attention_biases[:, :1]
        return self.attention_bias_cache[key]

    def forward(self, x):
        y = self.stem(x)
        return y + self.get_bias(x.device).sum(1).view(1, -1, 1, 1)


class Lazy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.LazyConv2d(8, 3, stride=4, padding=1)
        self.norm = nn.LazyBatchNorm2d()

    def forward(self, x):
        return self.norm(self.stem(x))


class Meddler(nn.Module):
    """Writes its weights, counts calls, keeps a plain tensor, draws from every generator, and needs .item()."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.calls = 0
        self.steps = torch.zeros(1)
        self.seen: list[int] = []
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        self.calls += 1
        self.seen.append(x.shape[-1])
        self.steps.add_(1)
        with torch.no_grad():
            self.stem.weight.mul_(2)
        random.random()
        np.random.rand()
        torch.rand(1)
        y = self.drop(self.stem(x))
        if y.mean().item() > 1e9:  # forces the real fallback in auto mode
            y = y * 0
        self.extra = y.detach()  # an attribute the forward adds
        self.train(False)
        return y


CASES = {"reused": Reused, "bias-cache": BiasCache, "lazy": Lazy, "meddler": Meddler}


@pytest.mark.parametrize("mode", ["auto", "meta", "real"])
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("training", [True, False])
def test_probe_leaves_the_model_bit_identical(name, mode, training):
    torch.manual_seed(0)
    model = CASES[name]().train(training)
    before, rng_before = fingerprint(model), rng_states()
    try:
        result = probe(model, (2, 3, 64, 64), mode=mode)
    except ProbeError:
        assert mode == "meta" and name in ("meddler", "lazy")  # only these cannot run on meta
    else:
        assert result.features[0].shape == (2, 8, 16, 16)
    assert_untouched(model, before, rng_before)


def test_a_reused_submodule_still_trains_after_the_probe():
    model = Reused()
    probe(model, (2, 3, 64, 64))
    probe(model, (2, 3, 64, 64), mode="real")
    assert all(p.device.type == "cpu" for p in model.parameters())
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.proj_b.weight is model.proj_a.weight and model.again is model.shared


def test_a_lazy_module_stays_lazy_and_still_initialises():
    model = Lazy()
    probe(model, (2, 3, 64, 64))
    assert type(model.stem) is nn.LazyConv2d and model.stem.has_uninitialized_params()
    out = model(torch.randn(2, 3, 64, 64))  # its own first forward initialises it as usual
    assert out.shape == (2, 8, 16, 16) and type(model.stem) is nn.Conv2d


def test_no_meta_tensor_is_left_in_a_cache():
    model = BiasCache().eval()
    probe(model, (2, 3, 64, 64), mode="meta")
    assert model.attention_bias_cache == {}
    assert model(torch.randn(1, 3, 64, 64)).device.type == "cpu"


@pytest.mark.parametrize("name", ["reused", "bias-cache"])
def test_the_reachability_trace_leaves_the_model_bit_identical(name):
    model = CASES[name]().eval()
    before, rng_before = fingerprint(model), rng_states()
    assert unreached_parameters(model, (2, 3, 64, 64), [""]) == ()
    assert_untouched(model, before, rng_before)


def test_a_forward_that_exits_is_a_probe_error():
    class Exits(nn.Module):
        def forward(self, x):
            raise SystemExit(3)

    with pytest.raises(ProbeError, match=r"called sys.exit\(3\)"):
        probe(Exits(), (1, 3, 32, 32))


def test_a_scripted_backbone_is_refused_with_a_reason():
    with pytest.raises(ProbeError, match="TorchScript"):
        probe(torch.jit.script(nn.Conv2d(3, 8, 3)), (1, 3, 32, 32))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_says_so():
    from adaptkit.errors import OptionError

    with pytest.raises(OptionError, match="CUDA is not available"):
        probe(nn.Conv2d(3, 8, 3), (1, 3, 32, 32), device="cuda")


@pytest.mark.slow  # real timm models at 224x224, both modes, then a backward (~10-60 s each on 2 cores)
@pytest.mark.parametrize("model_name", ["coat_lite_tiny", "levit_128s", "efficientformer_l1", "resnet18"])
def test_real_timm_models_are_left_untouched(model_name):
    timm = pytest.importorskip("timm", reason="timm is not installed (the learning work adds it)")
    model = timm.create_model(model_name, pretrained=False, features_only=model_name == "resnet18")
    for training in (True, False):
        model.train(training)
        before, rng_before = fingerprint(model), rng_states()
        probe(model, (2, 3, 224, 224))
        assert_untouched(model, before, rng_before)
    model.train()
    out = model(torch.randn(2, 3, 224, 224))
    loss = sum(o.float().sum() for o in (out if isinstance(out, (list, tuple)) else [out]))
    loss.backward()
    assert all(p.device.type == "cpu" for p in model.parameters())
