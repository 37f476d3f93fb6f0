"""A network as a list of layers, each reading the outputs of earlier layers.

Darknet cfgs and the official yaml models are both such lists; keeping that form means darknet
weights load in layer order, official state dicts map index for index, and a subnet is just the
layers some outputs depend on. `GraphBuilder` tracks channels and strides while a member is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


@dataclass
class Node:
    """One layer: its module, the absolute indices of the layers it reads (-1: the network input), its stage."""

    module: nn.Module
    sources: tuple[int, ...]
    stage: str


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

    def add(self, module: nn.Module, out_channels: int, stage: str, sources: tuple[int, ...] = (-1,),
            stride_factor: float = 1) -> int:
        """Append `module` reading `sources`; returns its absolute index."""
        absolute = tuple(self.resolve(s) for s in sources)
        stride = int(self.stride_of(absolute[0]) * stride_factor)
        self.nodes.append(Node(module, absolute, stage))
        self.channels.append(out_channels)
        self.strides.append(stride)
        return len(self.nodes) - 1

    @property
    def last(self) -> int:
        return len(self.nodes) - 1
