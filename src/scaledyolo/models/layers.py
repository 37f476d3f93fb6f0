"""Building blocks of the Scaled-YOLOv4 family, one block per class.

Parameter layouts (attribute names and shapes) follow the official definitions so that darknet
weights load in convolution order and official PyTorch state dicts map key for key:
`Conv` is conv -> BN -> activation, the CSP blocks keep the official `cv1..cv7`, `bn`, `m` parts.
Every block takes the list of its inputs' tensors when it has several sources (see `yolo.Graph`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

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
        if isinstance(m, nn.BatchNorm2d):
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


class BottleneckCSP(nn.Module):
    """CSP stage of the large members: half the channels go through `n` bottlenecks, half bypass.

    The two halves end in plain convolutions (`cv3` main, `cv2` bypass) that share one BN + activation
    after concatenation, then `cv4` merges them (the paper's fully CSP-ized Darknet stage).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, act: str = "mish") -> None:
        super().__init__()
        hidden = c2 // 2
        self.cv1 = Conv(c1, hidden, 1, 1, act)
        self.cv2 = nn.Conv2d(c1, hidden, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(hidden, hidden, 1, 1, bias=False)
        self.cv4 = Conv(2 * hidden, c2, 1, 1, act)
        self.bn = nn.BatchNorm2d(2 * hidden)
        self.act = make_activation(act)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, act) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.cv3(self.m(self.cv1(x)))
        bypass = self.cv2(x)
        return self.cv4(self.act(self.bn(torch.cat((main, bypass), 1))))


class BottleneckCSP2(nn.Module):
    """CSP block of the large members' PAN: the split happens after a first 1x1 transition (`cv1`)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, act: str = "mish") -> None:
        super().__init__()
        hidden = c2
        self.cv1 = Conv(c1, hidden, 1, 1, act)
        self.cv2 = nn.Conv2d(hidden, hidden, 1, 1, bias=False)
        self.cv3 = Conv(2 * hidden, c2, 1, 1, act)
        self.bn = nn.BatchNorm2d(2 * hidden)
        self.act = make_activation(act)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, act) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv1(x)
        return self.cv3(self.act(self.bn(torch.cat((self.m(x1), self.cv2(x1)), 1))))


class SPPCSP(nn.Module):
    """CSP-ized spatial pyramid pooling (max pools 5, 9, 13) at the top of the large members' backbone."""

    def __init__(self, c1: int, c2: int, act: str = "mish", pools: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = c2
        self.cv1 = Conv(c1, hidden, 1, 1, act)
        self.cv2 = nn.Conv2d(c1, hidden, 1, 1, bias=False)
        self.cv3 = Conv(hidden, hidden, 3, 1, act)
        self.cv4 = Conv(hidden, hidden, 1, 1, act)
        self.m = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in pools)
        self.cv5 = Conv((len(pools) + 1) * hidden, hidden, 1, 1, act)
        self.cv6 = Conv(hidden, hidden, 3, 1, act)
        self.bn = nn.BatchNorm2d(2 * hidden)
        self.act = make_activation(act)
        self.cv7 = Conv(2 * hidden, c2, 1, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        return self.cv7(self.act(self.bn(torch.cat((y1, self.cv2(x)), 1))))


class Concat(nn.Module):
    """Concatenate the inputs along channels; with `groups` > 1 keep only chunk `group_id` (darknet route)."""

    def __init__(self, groups: int = 1, group_id: int = 0) -> None:
        super().__init__()
        self.groups = groups
        self.group_id = group_id

    def forward(self, xs: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        x = xs if isinstance(xs, torch.Tensor) else (xs[0] if len(xs) == 1 else torch.cat(xs, 1))
        if self.groups > 1:
            x = x.chunk(self.groups, 1)[self.group_id]
        return x


class Shortcut(nn.Module):
    """Residual add of two earlier outputs (darknet [shortcut], linear activation)."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return xs[0] + xs[1]


class MaxPool(nn.Module):
    """Max pooling with darknet's 'same' rule: stride 1 keeps the size, stride s divides it by s."""

    def __init__(self, k: int, s: int) -> None:
        super().__init__()
        self.k, self.s = k, s
        self.pool = nn.MaxPool2d(k, s, (k - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.s == 1 and self.k % 2 == 0:
            x = F.pad(x, (0, 1, 0, 1), mode="replicate")
        return self.pool(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by an integer factor."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class Identity(nn.Module):
    """Pass-through; marks where a darknet [yolo] layer reads its raw map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
