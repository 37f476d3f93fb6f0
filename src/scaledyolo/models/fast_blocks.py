"""Fast versions of the network's blocks for the CPU inference path (`models.inference`).

Each module computes what the block it replaces computes in eval mode, from a model whose batch norms
are already folded (`models.fusion.fold_batchnorms`); `FastConvMaker` turns a fused model into them.
Why each trick pays is said where it is done.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaledyolo.models.blocks import SPPCSP, BottleneckCSP, BottleneckCSP2, CSPOSAStage
from scaledyolo.models.fusion import ChannelAffine
from scaledyolo.models.layers import Conv

MISH_CHUNK = 1 << 16  # elements: 256 KiB of float32, so the three passes over a chunk stay in L2
_ONE = torch.ones(())  # the 1 of 1 + r^2 (addcmul's input; a 0-dim tensor takes the activation's dtype)


def _mish_in_place(z: torch.Tensor) -> None:
    """`z <- mish(-z)` in three passes: ``r = sigmoid(z)``, ``r <- 1 + r^2``, ``z <- z - 2 z / r``."""
    r = torch.sigmoid(z)
    if r.device.type == "cpu":
        torch.addcmul(_ONE, r, r, out=r)
    else:  # a CPU 0-dim input is not accepted by every CUDA kernel; two in-place passes instead
        r.mul_(r).add_(1)
    z.addcdiv_(z, r, value=-2)


def negated_mish(z: torch.Tensor) -> torch.Tensor:
    """Mish of ``y = -z``, overwriting `z` (a fresh activation the caller owns) and returning it.

    The convolution before it is built with negated weights and bias, so it hands over ``z = -y``
    for free. With ``r = sigmoid(z) = 1 / (1 + e^y)``, ``tanh(softplus(y)) = ((1 + e^y)^2 - 1) /
    ((1 + e^y)^2 + 1) = (1 - r^2) / (1 + r^2)``, so ``mish(y) = y (1 - r^2) / (1 + r^2) = z - 2 z /
    (1 + r^2)``: one sigmoid and two cheap passes (PyTorch's own Mish evaluates tanh and softplus,
    several times slower), with no overflow (r stays in 0-1). A large activation is done in chunks
    that fit the core's L2 cache, so only the first pass reads main memory.
    """
    for part in _cache_sized_parts(z):
        _mish_in_place(part)
    return z


def _cache_sized_parts(z: torch.Tensor) -> Sequence[torch.Tensor]:
    """`z` as `MISH_CHUNK`-element views when it is a dense CPU tensor (either layout), else `z` whole:
    under torch.compile inductor fuses the passes itself, and chunks pay only on a CPU's L2."""
    if torch.compiler.is_compiling() or z.device.type != "cpu":
        return [z]
    if z.is_contiguous():
        return z.view(-1).split(MISH_CHUNK)
    if z.is_contiguous(memory_format=torch.channels_last):
        return z.permute(0, 2, 3, 1).view(-1).split(MISH_CHUNK)
    return [z]


def _post_op(act: nn.Module) -> tuple[str, list[float]]:
    """The oneDNN post-op (name, scalars) computing `act`, or ('none', []) when it has none."""
    if isinstance(act, nn.LeakyReLU):
        return "leaky_relu", [float(act.negative_slope)]
    if isinstance(act, nn.ReLU):
        return "relu", []
    if isinstance(act, nn.SiLU):
        return "swish", []
    if isinstance(act, nn.Sigmoid):
        return "sigmoid", []
    return "none", []


class FastConv(nn.Module):
    """Convolution (BN already folded) + activation, with pre-packed oneDNN weights when `packed`."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module, dtype: torch.dtype, packed: bool,
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.mish = isinstance(act, nn.Mish)
        self.attr, self.scalars = _post_op(act)
        sign = -1.0 if self.mish else 1.0  # a Mish convolution outputs -y for `negated_mish`
        weight = conv.weight.detach().to(dtype) * sign
        self.bias = (nn.Parameter(conv.bias.detach().to(dtype) * sign, requires_grad=False)
                     if conv.bias is not None else None)
        self.packed = False
        if packed:
            shape = list(input_shape) if input_shape is not None else [1, conv.in_channels, 64, 64]
            try:  # a oneDNN-layout tensor cannot be a Parameter; it is derived data, kept as a plain attribute
                self.weight = torch.ops.mkldnn._reorder_convolution_weight(
                    weight, self.padding, self.stride, self.dilation, self.groups, shape)
                self.packed = True
            except RuntimeError:  # this CPU's oneDNN cannot run the dtype (e.g. bf16 without AVX-512): plain conv
                pass
        if not self.packed:
            self.weight = nn.Parameter(weight, requires_grad=False)
        self.act = nn.Identity() if self.mish or (self.packed and self.attr != "none") else act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed:
            y = torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                self.attr, self.scalars, None)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        y = self.act(y)
        return negated_mish(y) if self.mish else y


class _FastCSP(nn.Module):
    """BottleneckCSP (its post-concat BN already folded into `cv3` and `cv2`) with Mish applied per half."""

    def __init__(self, block: BottleneckCSP, make: "FastConvMaker") -> None:
        super().__init__()
        self.cv1, self.m, self.cv4 = make(block.cv1), make(block.m), make(block.cv4)
        self.cv3 = make.conv(block.cv3, block.act)
        self.cv2 = make.conv(block.cv2, block.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv4(torch.cat((self.cv3(self.m(self.cv1(x))), self.cv2(x)), 1))


class _FastCSP2(nn.Module):
    """BottleneckCSP2 / SPPCSP tail: the bypass half's BN is folded, the main half keeps an affine."""

    def __init__(self, head: nn.Module, main: nn.Module, bypass: nn.Conv2d, affine: ChannelAffine, act: nn.Module,
                 out: nn.Module, make: "FastConvMaker", bypass_from_input: bool) -> None:
        super().__init__()
        first = affine.scale.numel() - bypass.out_channels
        self.head, self.main, self.out = make(head), make(main), make(out)
        like = torch.empty(0, dtype=make.dtype, device=affine.scale.device)
        self.mish = isinstance(act, nn.Mish)
        sign = -1.0 if self.mish else 1.0  # -y for `negated_mish`
        self.affine = ChannelAffine(affine.scale.flatten()[:first] * sign, affine.shift.flatten()[:first] * sign, like)
        self.act = copy.deepcopy(act)
        self.bypass = make.conv(bypass, act)
        self.bypass_from_input = bypass_from_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.head(x)
        main = self.affine(self.main(x1))
        main = negated_mish(main) if self.mish else self.act(main)
        bypass = self.bypass(x if self.bypass_from_input else x1)
        return self.out(torch.cat((main, bypass), 1))


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """`F.max_pool2d(x, 2, 2)`, bit for bit, as three element-wise maxima of strided views: half the
    time of PyTorch's CPU pooling, which also computes the indices nobody reads here."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
    return torch.maximum(top, torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]), out=top)


class _FastCSPOSA(nn.Module):
    """CSPOSAStage with its 2x2 max pool taken before the final concatenation (pooling is per channel,
    so ``pool(cat(a, b)) = cat(pool(a), pool(b))``): the concatenation copies a quarter of the data."""

    def __init__(self, stage: CSPOSAStage, make: "FastConvMaker") -> None:
        super().__init__()
        self.first, self.conv1, self.conv2 = make(stage.first), make(stage.conv1), make(stage.conv2)
        self.transition = make(stage.transition)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.first(x)
        y1 = self.conv1(x[:, x.shape[1] // 2:])
        partial = self.transition(torch.cat((self.conv2(y1), y1), 1))
        return torch.cat((max_pool_2x2(x), max_pool_2x2(partial)), 1), partial


class _SPP(nn.Module):
    """The SPPCSP main branch up to (and including) cv6."""

    def __init__(self, block: SPPCSP, make: "FastConvMaker") -> None:
        super().__init__()
        self.cv1, self.cv3, self.cv4 = make(block.cv1), make(block.cv3), make(block.cv4)
        self.m = block.m
        self.cv5, self.cv6 = make(block.cv5), make(block.cv6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        return self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))


class FastConvMaker:
    """Turns modules of a fused model into their fast versions (recursively)."""

    def __init__(self, dtype: torch.dtype, packed: bool, shapes: dict[int, torch.Size]) -> None:
        self.dtype, self.packed, self.shapes = dtype, packed, shapes

    def conv(self, conv: nn.Conv2d, act: nn.Module) -> FastConv:
        return FastConv(conv, act, self.dtype, self.packed, self.shapes.get(id(conv)))

    def __call__(self, module: nn.Module) -> nn.Module:
        """`module` comes from a model whose batch norms are folded (`fold_batchnorms`)."""
        if isinstance(module, Conv):
            return self.conv(module.conv, module.act)
        if isinstance(module, CSPOSAStage):
            return _FastCSPOSA(module, self)
        if isinstance(module, BottleneckCSP):
            return _FastCSP(module, self)
        if isinstance(module, BottleneckCSP2):
            return _FastCSP2(module.cv1, module.m, module.cv2, module.bn, module.act, module.cv3, self, False)
        if isinstance(module, SPPCSP):
            return _FastCSP2(nn.Identity(), _SPP(module, self), module.cv2, module.bn, module.act, module.cv7,
                             self, True)
        if isinstance(module, nn.Conv2d):
            return self.conv(module, nn.Identity())
        for name, child in module.named_children():
            setattr(module, name, self(child))
        return module
