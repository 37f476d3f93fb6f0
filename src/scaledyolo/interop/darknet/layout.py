"""The table between a darknet cfg and our model: cfg layer i -> what it is and, for a
convolution, the path of the module in our model that holds its weights.

For the darknet-born members it is derived from the model's named blocks, block by block, in the
order yolov4-tiny.cfg and yolov4-csp.cfg write their layers (a `CSPOSAStage` is 8 cfg layers: conv,
split route, conv, conv, route, conv, route, maxpool). The same table writes the cfg
(`writer.cfg_text`), orders the `.weights` tensors (`weights`) and recognises a cfg as a member
(`spec_from_cfg` compares the cfg with the one the table writes). A model run by the generic graph
(`arch='darknet'`) is its cfg already: layer i is `backbone.layers.i`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch.nn as nn

from scaledyolo.errors import UserError
from scaledyolo.interop.darknet.graph import DarknetGraph, MaxPool, Route, Shortcut, Upsample, YoloInput
from scaledyolo.models.layers import Conv

if TYPE_CHECKING:
    from scaledyolo.models.yolo import YOLO


@dataclass
class CfgLayer:
    """One cfg layer: `kind` is the section type; `module` (convolutional) the module path in our model;
    `sources` (route, shortcut) absolute layer indices; `size`/`stride` (maxpool, upsample); `level` (yolo)."""

    kind: str
    module: str = ""
    sources: tuple[int, ...] = ()
    groups: int = 1
    group_id: int = 0
    size: int = 0
    stride: int = 0
    level: int = -1


class _Table:
    """Appends cfg layers, each method returning the new layer's index."""

    def __init__(self) -> None:
        self.layers: list[CfgLayer] = []

    def _add(self, layer: CfgLayer) -> int:
        self.layers.append(layer)
        return len(self.layers) - 1

    @property
    def last(self) -> int:
        return len(self.layers) - 1

    def conv(self, module: str) -> int:
        return self._add(CfgLayer("convolutional", module))

    def route(self, *sources: int, groups: int = 1, group_id: int = 0) -> int:
        return self._add(CfgLayer("route", sources=sources, groups=groups, group_id=group_id))

    def shortcut(self, other: int) -> int:
        return self._add(CfgLayer("shortcut", sources=(self.last, other)))

    def maxpool(self, size: int, stride: int) -> int:
        return self._add(CfgLayer("maxpool", size=size, stride=stride))

    def upsample(self, stride: int = 2) -> int:
        return self._add(CfgLayer("upsample", stride=stride))

    def head(self, level: int) -> int:
        self.conv(f"head.convs.{level}")
        self.conv(f"head.outputs.{level}")
        return self._add(CfgLayer("yolo", level=level))

    def residual_units(self, path: str, count: int, residual: bool = True) -> None:
        """`count` Bottlenecks at `path`.0, .1 ...: 1x1, 3x3 and, when residual, a [shortcut] from=-3."""
        for j in range(count):
            start = self.last
            self.conv(f"{path}.{j}.cv1")
            self.conv(f"{path}.{j}.cv2")
            if residual:
                self.shortcut(start)


def _tiny(model: "YOLO") -> list[CfgLayer]:
    t = _Table()
    t.conv("backbone.stem.0")
    t.conv("backbone.stem.1")
    partial = -1
    for stage in ("backbone.stage1", "backbone.stage2", "backbone.stage3"):  # CSPOSAStage
        first = t.conv(f"{stage}.first")
        t.route(first, groups=2, group_id=1)
        y1 = t.conv(f"{stage}.conv1")
        y2 = t.conv(f"{stage}.conv2")
        t.route(y2, y1)
        partial = t.conv(f"{stage}.transition")
        t.route(first, partial)
        t.maxpool(2, 2)
    t.conv("backbone.stage4")
    reduce = t.conv("neck.reduce")
    t.head(1)
    t.route(reduce)
    t.conv("neck.lateral")
    up = t.upsample()
    t.route(up, partial)
    t.head(0)
    return t.layers


def _csp(model: "YOLO") -> list[CfgLayer]:
    t = _Table()
    backbone, neck = model.backbone, model.neck
    t.conv("backbone.stem")
    t.conv("backbone.stage1.down")  # ResidualStage
    t.residual_units("backbone.stage1.blocks", len(backbone.stage1.blocks))
    outputs = []
    for name in backbone.stage_names[1:]:  # CSPDarkStage
        stage = f"backbone.{name}"
        down = t.conv(f"{stage}.down")
        bypass = t.conv(f"{stage}.bypass")
        t.route(down)
        t.conv(f"{stage}.main")
        t.residual_units(f"{stage}.blocks", len(getattr(backbone, name).blocks))
        t.conv(f"{stage}.transition")
        t.route(t.last, bypass)
        outputs.append(t.conv(f"{stage}.fuse"))
    source = t.last  # DarknetSPPCSP
    bypass = t.conv("neck.spp.bypass")
    t.route(source)
    t.conv("neck.spp.cv1")
    t.conv("neck.spp.cv2")
    x = t.conv("neck.spp.cv3")
    pools = []
    for k in (pool.kernel_size for pool in neck.spp.pools):
        if pools:
            t.route(x)
        pools.append(t.maxpool(k, 1))
    t.route(*reversed(pools), x)
    t.conv("neck.spp.cv4")
    t.conv("neck.spp.cv5")
    t.route(t.last, bypass)
    top_down = [t.conv("neck.spp.fuse")]
    lateral = outputs[1:]  # the stage outputs at strides 8, 16, ...

    def pan_block(path: str) -> int:  # CSPPANBlock
        first = t.conv(f"{path}.first")
        bypass = t.conv(f"{path}.bypass")
        t.route(first)
        t.residual_units(f"{path}.blocks", len(model.get_submodule(path).blocks), residual=False)
        t.route(t.last, bypass)
        return t.conv(f"{path}.fuse")

    for i in reversed(range(len(neck.lateral))):
        t.conv(f"neck.reduce.{i}")
        up = t.upsample()
        t.route(lateral[i])
        t.conv(f"neck.lateral.{i}")
        t.route(t.last, up)
        top_down.insert(0, pan_block(f"neck.top_down.{i}"))
    previous = top_down[0]
    t.head(0)
    for level in range(1, len(top_down)):
        t.route(previous)
        t.conv(f"neck.down.{level - 1}")
        t.route(t.last, top_down[level])
        previous = pan_block(f"neck.bottom_up.{level - 1}")
        t.head(level)
    return t.layers


def _graph(model: "YOLO") -> list[CfgLayer]:
    graph: DarknetGraph = model.backbone
    levels = {layer: level for level, layer in enumerate(graph.level_layers)}
    layers = []
    for i, (m, sources) in enumerate(zip(graph.layers, graph.sources)):
        if isinstance(m, Conv):
            layers.append(CfgLayer("convolutional", f"backbone.layers.{i}"))
        elif isinstance(m, Route):
            layers.append(CfgLayer("route", sources=sources, groups=m.groups, group_id=m.group_id))
        elif isinstance(m, Shortcut):
            layers.append(CfgLayer("shortcut", sources=sources))
        elif isinstance(m, MaxPool):
            layers.append(CfgLayer("maxpool", size=m.k, stride=m.s))
        elif isinstance(m, Upsample):
            layers.append(CfgLayer("upsample", stride=m.scale))
        elif isinstance(m, YoloInput) and i in levels:
            layers.append(CfgLayer("yolo", level=levels[i]))
        else:
            raise UserError(f"{model.spec.name}: layer {i} ({type(m).__name__}) has no darknet equivalent")
    return layers


LAYOUTS = {"tiny": _tiny, "csp": _csp, "darknet": _graph}


def darknet_layout(model: "YOLO") -> list[CfgLayer]:
    """The cfg layers of a darknet-born model (tiny, csp or a darknet cfg); UserError for the others."""
    layout = LAYOUTS.get(model.spec.arch)
    if layout is None:
        raise UserError(f"{model.spec.name} is not a darknet-born model (tiny, csp or a darknet cfg); "
                        "it has layers darknet .weights cannot hold")
    return layout(model)


def conv_modules(model: "YOLO") -> list[nn.Module]:
    """The modules holding the cfg's convolutions, in cfg order (`Conv`, or the bare output `nn.Conv2d`)."""
    return [model.get_submodule(layer.module) for layer in darknet_layout(model) if layer.kind == "convolutional"]


def yolo_layer_indices(model: "YOLO") -> list[int]:
    """The cfg index of each level's [yolo] layer, by level (how OpenCV DNN names its outputs)."""
    found = {layer.level: i for i, layer in enumerate(darknet_layout(model)) if layer.kind == "yolo"}
    return [found[level] for level in range(len(found))]
