"""The two layers every block of the family is made of: `Conv` (conv -> BN -> activation) and the
darknet residual unit `Bottleneck`, plus the activation vocabulary and the BatchNorm settings.

The paper's blocks built from them are in `scaledyolo.models.blocks`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

ACTIVATIONS = ("mish", "leaky", "silu", "relu", "linear", "logistic")


def make_activation(name: str) -> nn.Module:
    """The activation module for a name used in darknet cfgs and our specs."""
    if name == "mish":
        return nn.Mish(inplace=False)
    if name == "leaky":
        return nn.LeakyReLU(0.1, inplace=False)
    if name == "silu":
        return nn.SiLU(inplace=False)
    if name == "relu":
        return nn.ReLU(inplace=False)
    if name == "logistic":
        return nn.Sigmoid()
    if name == "linear":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r} (known: {', '.join(ACTIVATIONS)})")


def set_batchnorm(module: nn.Module, eps: float, momentum: float) -> None:
    """Give every BatchNorm inside `module` the member's eps and momentum.

    The blocks are built with PyTorch's BatchNorm2d and the model then sets the values its spec
    holds, once, the way the official code's initialize_weights does: one place decides them for
    every block (`ModelSpec.bn_eps`, `bn_momentum`).
    """
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.eps, m.momentum = eps, momentum


class Conv(nn.Module):
    """Convolution -> batch norm -> activation; without BN the convolution carries a bias (darknet's rule)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: str = "mish", bn: bool = True,
                 groups: int = 1, padding: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if padding is None else padding, groups=groups, bias=not bn)
        self.bn = nn.BatchNorm2d(c2) if bn else nn.Identity()
        self.act = make_activation(act)
        self.act_name = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 then 3x3 convolution, with a residual add when `shortcut` (the Darknet residual unit)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, act: str = "mish", e: float = 1.0) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1, act)
        self.cv2 = Conv(hidden, c2, 3, 1, act)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y
