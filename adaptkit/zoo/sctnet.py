"""SCTNet (AAAI 2024) in plain PyTorch, so it runs without mmcv 1.x / mmseg 0.x.

A port written from the network's published facts (layer order, shapes, parameter
counts). Submodule names follow the original backbone, so ``state_dict()`` keys are
the original ones with the ``backbone.`` prefix removed and its checkpoints load as
they are (see :mod:`adaptkit.mm.checkpoint`). The stem is therefore called ``conv1``
(``stem`` is a read-only alias) and the DAPPM module ``spp``.

``forward`` returns ``[x_out, x2, [img, [x_out, x5, x3]]]`` like the original: the
segmentation feature, the auxiliary feature, and the distillation inputs (the image
itself and the same ``x_out`` object again).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from adaptkit.errors import BuildError

__all__ = ["SCTNet", "sctnet_s", "sctnet_b", "drop_path"]

#: inner channels of every convolutional attention (fixed in the original design)
ATTN_INNER_CHANNELS = 64
#: kernel length of the 7x1 / 1x7 attention kernels
ATTN_KERNEL = 7


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch, rescale the rest."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; holds no parameters."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def _bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Pre-activation unit of DAPPM: BN, ReLU, conv (keys ``0.*`` BN and ``2.*`` conv)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
    )


def _pool_bn_relu_conv(pool: nn.Module, in_channels: int, out_channels: int) -> nn.Sequential:
    """A pooled DAPPM scale: pool, BN, ReLU, 1x1 conv (keys ``1.*`` BN and ``3.*`` conv)."""
    return nn.Sequential(pool, nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, out_channels, 1))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; the last block of a stage leaves out the final ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, no_relu: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride), nn.BatchNorm2d(out_channels)
            )
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        out = out + shortcut
        return out if self.no_relu else self.relu(out)


def _make_stage(in_channels: int, out_channels: int, blocks: int = 2, stride: int = 1) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride, no_relu=blocks == 1)]
    layers += [BasicBlock(out_channels, out_channels, 1, no_relu=i == blocks - 1) for i in range(1, blocks)]
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """Convolutional feed-forward: BN, 3x3 conv, GELU, dropout, 3x3 conv, dropout."""

    def __init__(self, channels: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, eps=1e-6)
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.conv1(self.norm(x))))
        return self.drop(self.conv2(x))


class ConvolutionalAttention(nn.Module):
    """Attention with learnable kernels as keys/values: a 7x1 and a 1x7 branch, summed.

    Each branch convolves with its kernel down to 64 channels, normalises (softmax over
    positions, then over the channels of each head) and convolves back with the same
    kernel transposed. Pure tensor ops, so it also runs on the meta device.
    """

    def __init__(self, channels: int, num_heads: int = 8, inner_channels: int = ATTN_INNER_CHANNELS) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.inner_channels = inner_channels
        self.norm = nn.BatchNorm2d(channels)
        self.kv = nn.Parameter(torch.zeros(inner_channels, channels, ATTN_KERNEL, 1))
        self.kv3 = nn.Parameter(torch.zeros(inner_channels, channels, 1, ATTN_KERNEL))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.reshape(n, self.num_heads, c // self.num_heads, h * w).softmax(dim=3)
        x = x / (x.sum(dim=2, keepdim=True) + 1e-6)
        return x.reshape(n, c, h, w)

    def _branch(self, x: torch.Tensor, kernel: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
        attn = self._normalise(F.conv2d(x, kernel, padding=padding))
        return F.conv2d(attn, kernel.transpose(0, 1), padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        half = ATTN_KERNEL // 2
        return self._branch(x, self.kv, (half, 0)) + self._branch(x, self.kv3, (0, half))


class CFBlock(nn.Module):
    """Conv-former block: x + DropPath(Attn(x)), then x + DropPath(MLP(x))."""

    def __init__(self, channels: int, num_heads: int = 8, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.attn_l = ConvolutionalAttention(channels, num_heads=num_heads)
        self.mlp_l = MLP(channels, drop_rate=drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn_l(x))
        return x + self.drop_path(self.mlp_l(x))


class DAPPM(nn.Module):
    """Deep aggregation pyramid pooling: four pooled scales fused in a cascade, plus a shortcut.

    The global-pool scale runs BN on 1x1 maps, so train mode needs a batch of at least 2.
    """

    def __init__(self, in_channels: int, inter_channels: int, out_channels: int) -> None:
        super().__init__()
        self.scale1 = _pool_bn_relu_conv(nn.AvgPool2d(5, 2, 2, count_include_pad=True), in_channels, inter_channels)
        self.scale2 = _pool_bn_relu_conv(nn.AvgPool2d(9, 4, 4, count_include_pad=True), in_channels, inter_channels)
        self.scale3 = _pool_bn_relu_conv(nn.AvgPool2d(17, 8, 8, count_include_pad=True), in_channels, inter_channels)
        self.scale4 = _pool_bn_relu_conv(nn.AdaptiveAvgPool2d((1, 1)), in_channels, inter_channels)
        self.scale0 = _bn_relu_conv(in_channels, inter_channels, 1)
        self.process1 = _bn_relu_conv(inter_channels, inter_channels, 3)
        self.process2 = _bn_relu_conv(inter_channels, inter_channels, 3)
        self.process3 = _bn_relu_conv(inter_channels, inter_channels, 3)
        self.process4 = _bn_relu_conv(inter_channels, inter_channels, 3)
        self.compression = _bn_relu_conv(inter_channels * 5, out_channels, 1)
        self.shortcut = _bn_relu_conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        scales = (self.scale1, self.scale2, self.scale3, self.scale4)
        processes = (self.process1, self.process2, self.process3, self.process4)
        ys = [self.scale0(x)]
        for scale, process in zip(scales, processes, strict=True):
            up = F.interpolate(scale(x), size=size, mode="bilinear", align_corners=False)
            ys.append(process(up + ys[-1]))
        return self.compression(torch.cat(ys, dim=1)) + self.shortcut(x)


class SCTNet(nn.Module):
    """SCTNet backbone: a single-branch CNN whose late stages are conv-former blocks.

    Strides: x2 8, x3 16, x5 32; x_out = concat(x2, upsampled DAPPM output), 4c channels
    at stride 8. ``state_dict()`` keys equal the original mmseg backbone's keys.
    """

    def __init__(
        self,
        base_channels: int = 64,
        spp_channels: int = 128,
        num_heads: int = 8,
        drop_path_rate: float = 0.1,
        drop_rate: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (
            ("base_channels", base_channels),
            ("spp_channels", spp_channels),
            ("in_channels", in_channels),
            ("num_heads", num_heads),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BuildError(f"SCTNet {name} must be a positive integer, got {value!r}")
        if ATTN_INNER_CHANNELS % num_heads:
            raise BuildError(
                f"SCTNet num_heads must divide the {ATTN_INNER_CHANNELS} attention channels, got {num_heads}; "
                "use 1, 2, 4, 8, 16, 32 or 64"
            )
        for name, rate in (("drop_path_rate", drop_path_rate), ("drop_rate", drop_rate)):
            if not 0.0 <= rate < 1.0:
                raise BuildError(f"SCTNet {name} must lie in [0, 1), got {rate!r}")

        c = base_channels
        self.base_channels = c
        self.conv1 = nn.Sequential(  # the stem, stride 4; named as in the original checkpoints
            nn.Conv2d(in_channels, c, 3, 2, 1),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, 2, 1),
            nn.BatchNorm2d(c),
            nn.ReLU(),
        )
        self.relu = nn.ReLU()
        self.layer1 = _make_stage(c, c)
        self.layer2 = _make_stage(c, 2 * c, stride=2)
        self.layer3 = _make_stage(2 * c, 4 * c, stride=2)
        self.layer3_2 = CFBlock(4 * c, num_heads, drop_rate, drop_path_rate)
        self.convdown4 = nn.Sequential(nn.Conv2d(4 * c, 8 * c, 3, 2, 1), nn.BatchNorm2d(8 * c), nn.ReLU())
        self.layer4 = CFBlock(8 * c, num_heads, drop_rate, drop_path_rate)
        self.layer5 = CFBlock(8 * c, num_heads, drop_rate, drop_path_rate)
        self.spp = DAPPM(8 * c, spp_channels, 2 * c)
        self.init_weights()

    @property
    def stem(self) -> nn.Sequential:
        """The stride-4 stem (stored as ``conv1`` so checkpoint keys stay the original ones)."""
        return self.conv1

    @torch.no_grad()
    def init_weights(self) -> None:
        """Kaiming for convs, BN weight 1 / bias 0, truncated normal (std 0.001) for attention kernels."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, ConvolutionalAttention):
                nn.init.trunc_normal_(module.kv, std=0.001)
                nn.init.trunc_normal_(module.kv3, std=0.001)

    def forward(self, x: torch.Tensor) -> list[Any]:
        x1 = self.layer1(self.conv1(x))  # c, stride 4
        x2 = self.layer2(self.relu(x1))  # 2c, stride 8
        x3 = self.layer3_2(self.relu(self.layer3(self.relu(x2))))  # 4c, stride 16
        x4 = self.layer4(self.relu(self.convdown4(x3)))  # 8c, stride 32
        x5 = self.layer5(self.relu(x4))  # 8c, stride 32
        context = F.interpolate(self.spp(x5), size=x2.shape[2:], mode="bilinear", align_corners=False)
        x_out = torch.cat([x2, context], dim=1)  # 4c, stride 8
        return [x_out, x2, [x, [x_out, x5, x3]]]


def sctnet_s(**kwargs: Any) -> SCTNet:
    """SCTNet-S: base 32 channels, DAPPM 64 (4,504,096 parameters)."""
    kwargs.setdefault("base_channels", 32)
    kwargs.setdefault("spp_channels", 64)
    return SCTNet(**kwargs)


def sctnet_b(**kwargs: Any) -> SCTNet:
    """SCTNet-B: base 64 channels, DAPPM 128 (16,841,792 parameters)."""
    kwargs.setdefault("base_channels", 64)
    kwargs.setdefault("spp_channels", 128)
    return SCTNet(**kwargs)
