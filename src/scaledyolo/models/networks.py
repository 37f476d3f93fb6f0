"""Backbones, necks and the head the family's members are assembled from (see `architectures`).

The interface `YOLO` relies on: `backbone(x)` returns the feature maps the neck reads, by increasing
stride; `neck(features, levels)` returns one map per requested detection level (it computes only
what those levels need); `head(pyramid, levels)` returns each level's raw output convolution.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from scaledyolo.models.blocks import CSPOSAStage
from scaledyolo.models.layers import Conv


class TinyBackbone(nn.Module):
    """CSPOSANet (YOLOv4-tiny): a two-conv stride-4 stem, three CSPOSA stages with PCB, a 3x3 conv.

    Returns the third stage's partial (PCB) feature at stride 16 and the stride-32 output.
    """

    def __init__(self, widths: Sequence[int], act: str) -> None:
        super().__init__()
        w32, w64, w128, w256, w512 = widths
        self.stem = nn.Sequential(Conv(3, w32, 3, 2, act), Conv(w32, w64, 3, 2, act))
        self.stage1 = CSPOSAStage(w64, w64, act)
        self.stage2 = CSPOSAStage(2 * w64, w128, act)
        self.stage3 = CSPOSAStage(2 * w128, w256, act)
        self.stage4 = Conv(2 * w256, w512, 3, 1, act)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, _ = self.stage1(self.stem(x))
        x, _ = self.stage2(x)
        x, partial = self.stage3(x)
        return [partial, self.stage4(x)]


class CSPBackbone(nn.Module):
    """A stride-1 3x3 stem and `len(stages)` stride-2 stages (`stage1`, `stage2`, ...).

    Returns the outputs of stage 3 onwards (strides 8, 16, ... 2**stages), what the PAN reads.
    """

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module]) -> None:
        super().__init__()
        self.stem = stem
        self.stage_names = [f"stage{i}" for i in range(1, len(stages) + 1)]
        for name, stage in zip(self.stage_names, stages):
            self.add_module(name, stage)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outputs.append(x)
        return outputs[2:]


class TinyFPN(nn.Module):
    """YOLOv4-tiny's neck: a 1x1 reduction at stride 32; for stride 16 a 1x1, 2x upsampling and a
    concat with the backbone's PCB feature."""

    def __init__(self, c_partial: int, c_top: int, c_mid: int, c_lateral: int, act: str) -> None:
        super().__init__()
        self.reduce = Conv(c_top, c_mid, 1, 1, act)
        self.lateral = Conv(c_mid, c_lateral, 1, 1, act)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.out_channels = [c_lateral + c_partial, c_mid]

    def forward(self, features: list[torch.Tensor], levels: Sequence[int]) -> list[torch.Tensor]:
        partial, top = features
        p5 = self.reduce(top)
        pyramid = {1: p5}
        if 0 in levels:
            pyramid[0] = torch.cat((self.upsample(self.lateral(p5)), partial), 1)
        return [pyramid[level] for level in levels]


class CSPPAN(nn.Module):
    """The CSP-ized PAN: SPPCSP on the top stage; a top-down path (1x1 reduce, 2x upsample, 1x1
    lateral from the backbone, concat, CSP block) and a bottom-up path (stride-2 3x3, concat with
    the top-down map of that level, CSP block).

    `block` is the CSP-PAN block (`CSPPANBlock` for yolov4-csp, `BottleneckCSP2` for P5-P7) and `spp`
    the pyramid pooling (`DarknetSPPCSP` / `SPPCSP`). `top_down[i]` and `lateral[i]` serve level i,
    `down[i]` and `bottom_up[i]` level i + 1.
    """

    def __init__(self, in_channels: Sequence[int], widths: Sequence[int], depth: int, act: str,
                 block: type[nn.Module], spp: type[nn.Module]) -> None:
        super().__init__()
        levels = len(widths)
        self.spp = spp(in_channels[-1], widths[-1], act)
        self.reduce = nn.ModuleList(Conv(widths[i + 1], widths[i], 1, 1, act) for i in range(levels - 1))
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral = nn.ModuleList(Conv(in_channels[i], widths[i], 1, 1, act) for i in range(levels - 1))
        self.top_down = nn.ModuleList(block(2 * widths[i], widths[i], depth, act=act) for i in range(levels - 1))
        self.down = nn.ModuleList(Conv(widths[i], widths[i + 1], 3, 2, act) for i in range(levels - 1))
        self.bottom_up = nn.ModuleList(block(2 * widths[i + 1], widths[i + 1], depth, act=act)
                                       for i in range(levels - 1))
        self.out_channels = list(widths)

    def forward(self, features: list[torch.Tensor], levels: Sequence[int]) -> list[torch.Tensor]:
        x = self.spp(features[-1])
        top_down = [x]
        for i in reversed(range(len(self.lateral))):
            up = self.upsample(self.reduce[i](x))
            x = self.top_down[i](torch.cat((self.lateral[i](features[i]), up), 1))
            top_down.insert(0, x)
        pyramid = [x]
        for i in range(max(levels)):
            x = self.bottom_up[i](torch.cat((self.down[i](x), top_down[i + 1]), 1))
            pyramid.append(x)
        return [pyramid[level] for level in levels]


class YOLOHead(nn.Module):
    """Per level a 3x3 conv and the 1x1 output convolution (with bias) that makes the raw map."""

    def __init__(self, in_channels: Sequence[int], mid_channels: Sequence[int], out_channels: int,
                 act: str) -> None:
        super().__init__()
        self.convs = nn.ModuleList(Conv(c, m, 3, 1, act) for c, m in zip(in_channels, mid_channels))
        self.outputs = nn.ModuleList(nn.Conv2d(m, out_channels, 1) for m in mid_channels)

    def forward(self, pyramid: list[torch.Tensor], levels: Sequence[int]) -> list[torch.Tensor]:
        return [self.outputs[level](self.convs[level](x)) for level, x in zip(levels, pyramid)]
