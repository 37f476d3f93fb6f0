"""The generic darknet runner: any cfg, layer for layer, for cfgs that are none of our members.

Our members are named blocks (`scaledyolo.models.blocks`); a user's own cfg (yolov4-tiny-3l, a
cfg with an extra layer) has no such form, and refusing it would cut that user off from
converting, fine-tuning and exporting what darknet already runs. So a foreign cfg runs here as
darknet runs it: a list of layers, each reading the previous one unless it is a [route] or a
[shortcut]. `DarknetGraph` is the backbone of such a model; its neck and head only pass the
[yolo] inputs through. Subnets of it compute every layer (their output is still exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class Route(nn.Module):
    """[route]: concatenate the inputs along channels; with `groups` > 1 keep only chunk `group_id`."""

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
    """[shortcut]: residual add of two earlier outputs (linear activation)."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return xs[0] + xs[1]


class MaxPool(nn.Module):
    """[maxpool] with darknet's 'same' rule: stride 1 keeps the size, stride s divides it by s."""

    def __init__(self, k: int, s: int) -> None:
        super().__init__()
        self.k, self.s = k, s
        self.pool = nn.MaxPool2d(k, s, (k - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.s == 1 and self.k % 2 == 0:
            x = F.pad(x, (0, 1, 0, 1), mode="replicate")
        return self.pool(x)


class Upsample(nn.Module):
    """[upsample]: nearest-neighbour upsampling by an integer factor."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class YoloInput(nn.Module):
    """[yolo]: marks where a detection level reads its raw map (decoding happens in `Detect`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class Node:
    """One layer: its module, the absolute indices of the layers it reads (-1: the network input)."""

    module: nn.Module
    sources: tuple[int, ...]


class GraphBuilder:
    """Appends layers, resolving relative sources (-1 = previous layer) and tracking channels and strides."""

    def __init__(self, in_channels: int = 3) -> None:
        self.nodes: list[Node] = []
        self.channels: list[int] = []
        self.strides: list[int] = []
        self.in_channels = in_channels

    def resolve(self, source: int) -> int:
        return source if source >= 0 else len(self.nodes) + source

    def channels_of(self, source: int) -> int:
        index = self.resolve(source)
        return self.in_channels if index < 0 else self.channels[index]

    def stride_of(self, source: int) -> int:
        index = self.resolve(source)
        return 1 if index < 0 else self.strides[index]

    def add(self, module: nn.Module, out_channels: int, sources: tuple[int, ...] = (-1,),
            stride_factor: float = 1) -> int:
        """Append `module` reading `sources`; returns its absolute index."""
        absolute = tuple(self.resolve(s) for s in sources)
        stride = int(self.stride_of(absolute[0]) * stride_factor)
        self.nodes.append(Node(module, absolute))
        self.channels.append(out_channels)
        self.strides.append(stride)
        return len(self.nodes) - 1


class DarknetGraph(nn.Module):
    """The layers of a cfg in cfg order (`layers.i` is cfg layer i); returns the [yolo] inputs by stride."""

    def __init__(self, nodes: Sequence[Node], level_layers: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(n.module for n in nodes)
        self.sources = [n.sources for n in nodes]
        self.level_layers = list(level_layers)
        self.keep = {s for i, src in enumerate(self.sources) for s in src if s != i - 1} | set(self.level_layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: dict[int, torch.Tensor] = {-1: x}
        prev = x
        for i, (layer, src) in enumerate(zip(self.layers, self.sources)):
            inputs = [outputs[s] if s != i - 1 else prev for s in src]
            prev = layer(inputs[0] if len(inputs) == 1 else inputs)
            if i in self.keep:
                outputs[i] = prev
        return [outputs[i] for i in self.level_layers]


class SelectLevels(nn.Module):
    """Neck of a darknet graph: the graph made every level's map already; pick the requested ones."""

    def forward(self, features: list[torch.Tensor], levels: Sequence[int]) -> list[torch.Tensor]:
        return [features[level] for level in levels]


class RawMaps(nn.Module):
    """Head of a darknet graph: the cfg's own convolutions (inside the graph) made the raw maps."""

    def forward(self, pyramid: list[torch.Tensor], levels: Sequence[int]) -> list[torch.Tensor]:
        return pyramid
