"""The paper's blocks, one class per block, each `forward` drawn like the paper's figure.

Two families, by where a member was born:
- darknet-born (yolov4-tiny, yolov4-csp, as their darknet cfgs compute them): every convolution
  has its own BN + activation. `CSPOSAStage` (CSPOSANet stage with the partial concat, PCB),
  `ResidualStage` (Darknet residual stage), `CSPDarkStage` (CSPDarknet53 stage), `DarknetSPPCSP`
  and `CSPPANBlock` (the CSP-ized PAN block).
- born in the official PyTorch code (P5, P6, P7 and the yaml yolov4-csp): the two CSP halves end in
  plain convolutions sharing one BN + activation after the concat. `CSPStage` (stride-2 conv +
  `BottleneckCSP`), `SPPCSP` and `BottleneckCSP2` (the CSP-PAN block); their attribute names
  (`cv1..cv7`, `bn`, `m`) are the official ones, so an official state dict maps key for key inside
  a block (`scaledyolo.interop.official` maps the layer numbers).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from scaledyolo.models.layers import Bottleneck, Conv, make_activation

SPP_POOLS = (5, 9, 13)


class CSPOSAStage(nn.Module):
    """CSPOSANet stage with PCB (YOLOv4-tiny): 3x3 conv; split; two chained 3x3 on one half (OSA);
    concat both; 1x1 transition; partial concat with the stage input; 2x2 max pool.

    Returns the pooled output and the transition's output (the PCB feature the neck reads).
    """

    def __init__(self, c1: int, c2: int, act: str = "leaky") -> None:
        super().__init__()
        half = c2 // 2
        self.first = Conv(c1, c2, 3, 1, act)
        self.conv1 = Conv(half, half, 3, 1, act)
        self.conv2 = Conv(half, half, 3, 1, act)
        self.transition = Conv(c2, c2, 1, 1, act)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.first(x)
        _, part = x.chunk(2, 1)
        y1 = self.conv1(part)
        y2 = self.conv2(y1)
        partial = self.transition(torch.cat((y2, y1), 1))
        return self.pool(torch.cat((x, partial), 1)), partial


class ResidualStage(nn.Module):
    """Darknet residual stage: stride-2 3x3 conv, then `n` residual units (1x1 to half width, 3x3 back, add)."""

    def __init__(self, c1: int, c2: int, n: int = 1, act: str = "mish") -> None:
        super().__init__()
        self.down = Conv(c1, c2, 3, 2, act)
        self.blocks = nn.Sequential(*(Bottleneck(c2, c2, True, act, e=0.5) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.down(x))


class CSPDarkStage(nn.Module):
    """CSPDarknet53 stage: stride-2 conv; a 1x1 bypass half and a 1x1 main half through `n` residual
    units and a 1x1 transition; concat; 1x1 fusion."""

    def __init__(self, c1: int, c2: int, n: int = 1, act: str = "mish") -> None:
        super().__init__()
        half = c2 // 2
        self.down = Conv(c1, c2, 3, 2, act)
        self.bypass = Conv(c2, half, 1, 1, act)
        self.main = Conv(c2, half, 1, 1, act)
        self.blocks = nn.Sequential(*(Bottleneck(half, half, True, act) for _ in range(n)))
        self.transition = Conv(half, half, 1, 1, act)
        self.fuse = Conv(2 * half, c2, 1, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        main = self.transition(self.blocks(self.main(x)))
        return self.fuse(torch.cat((main, self.bypass(x)), 1))


class DarknetSPPCSP(nn.Module):
    """CSP-ized spatial pyramid pooling as yolov4-csp.cfg draws it: a 1x1 bypass; the main part 1x1,
    3x3, 1x1, max pools 13/9/5 concatenated with their input, 1x1, 3x3; concat; 1x1 fusion."""

    def __init__(self, c1: int, c2: int, act: str = "mish", pools: tuple[int, ...] = SPP_POOLS) -> None:
        super().__init__()
        self.bypass = Conv(c1, c2, 1, 1, act)
        self.cv1 = Conv(c1, c2, 1, 1, act)
        self.cv2 = Conv(c2, c2, 3, 1, act)
        self.cv3 = Conv(c2, c2, 1, 1, act)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in pools)
        self.cv4 = Conv((len(pools) + 1) * c2, c2, 1, 1, act)
        self.cv5 = Conv(c2, c2, 3, 1, act)
        self.fuse = Conv(2 * c2, c2, 1, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv3(self.cv2(self.cv1(x)))
        y = self.cv5(self.cv4(torch.cat([pool(y) for pool in reversed(self.pools)] + [y], 1)))
        return self.fuse(torch.cat((y, self.bypass(x)), 1))


class CSPPANBlock(nn.Module):
    """The CSP-ized PAN block (yolov4-csp): 1x1 in; a 1x1 bypass and `n` plain (1x1, 3x3) units on
    the main part, no residual; concat; 1x1 fusion."""

    def __init__(self, c1: int, c2: int, n: int = 1, act: str = "mish") -> None:
        super().__init__()
        self.first = Conv(c1, c2, 1, 1, act)
        self.bypass = Conv(c2, c2, 1, 1, act)
        self.blocks = nn.Sequential(*(Bottleneck(c2, c2, False, act) for _ in range(n)))
        self.fuse = Conv(2 * c2, c2, 1, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        return self.fuse(torch.cat((self.blocks(x), self.bypass(x)), 1))


class BottleneckCSP(nn.Module):
    """Fully CSP-ized Darknet stage of the large members: half the channels go through `n`
    bottlenecks, half bypass; the halves end in plain convolutions (`cv3` main, `cv2` bypass) that
    share one BN + activation after the concat, then `cv4` merges them."""

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


class CSPStage(nn.Module):
    """A backbone stage of the large members: stride-2 3x3 conv, then a `BottleneckCSP` of `n` units."""

    def __init__(self, c1: int, c2: int, n: int = 1, act: str = "mish") -> None:
        super().__init__()
        self.down = Conv(c1, c2, 3, 2, act)
        self.csp = BottleneckCSP(c2, c2, n, True, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.csp(self.down(x))


class BottleneckCSP2(nn.Module):
    """The CSP-PAN block of the large members: a 1x1 transition (`cv1`), then the CSP split: `n`
    plain bottlenecks on one part, a plain 1x1 on the other, shared BN + activation, 1x1 fusion."""

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
    """CSP-ized spatial pyramid pooling of the large members: a plain 1x1 bypass; the main part 1x1,
    3x3, 1x1, max pools 5/9/13 concatenated after their input, 1x1, 3x3; shared BN + activation; 1x1."""

    def __init__(self, c1: int, c2: int, act: str = "mish", pools: tuple[int, ...] = SPP_POOLS) -> None:
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
