"""Layer generators for the three architectures of the family, driven by a `ModelSpec`.

- `tiny`: CSPOSANet backbone + PCB head, leaky 0.1 (darknet yolov4-tiny.cfg, layer for layer).
- `csp`: CSPDarknet53s backbone, SPPCSP, CSP-PAN neck (darknet yolov4-csp.cfg, layer for layer).
- `large`: fully CSP-ized backbone and PAN (official yolov4-p5/p6/p7.yaml, layer for layer); the
  number of stages and the per-stage depths come from the spec, so P6 and P7 are P5 scaled;
  `spec.extra["first_stage"] == "bottleneck"` gives the official yolov4-csp.yaml (a plain residual first stage).
Each generator returns the builder and the indices of the layers whose outputs are the detection
levels, by increasing stride.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from scaledyolo.models.graph import GraphBuilder
from scaledyolo.models.layers import (
    Bottleneck, BottleneckCSP, BottleneckCSP2, Concat, Conv, Identity, MaxPool, Shortcut, SPPCSP, Upsample,
)

if TYPE_CHECKING:
    from scaledyolo.models.spec import ModelSpec


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Round a scaled channel count up to a multiple of `divisor` (the official width rule)."""
    return int(math.ceil(channels / divisor) * divisor)


def _head_channels(spec: "ModelSpec") -> int:
    return len(spec.anchors[0]) // 2 * (spec.num_classes + 5)


def build_tiny(spec: "ModelSpec") -> tuple[GraphBuilder, list[int]]:
    """YOLOv4-tiny: two stride-2 convs, three CSPOSA stages (split, two 3x3, concat, 1x1, concat, pool)."""
    w = lambda c: make_divisible(c * spec.width)  # noqa: E731
    act = spec.activation
    g = GraphBuilder()
    g.add(Conv(3, w(32), 3, 2, act), w(32), "stem", stride_factor=2)
    g.add(Conv(w(32), w(64), 3, 2, act), w(64), "stem", stride_factor=2)
    stage_outputs = []
    for i, c in enumerate((64, 128, 256)):
        stage = f"stage{i + 1}"
        c = w(c)
        g.add(Conv(g.channels_of(-1), c, 3, 1, act), c, stage)
        g.add(Concat(groups=2, group_id=1), c // 2, stage)
        g.add(Conv(c // 2, c // 2, 3, 1, act), c // 2, stage)
        g.add(Conv(c // 2, c // 2, 3, 1, act), c // 2, stage)
        g.add(Concat(), c, stage, sources=(-1, -2))
        stage_outputs.append(g.add(Conv(c, c, 1, 1, act), c, stage))
        g.add(Concat(), 2 * c, stage, sources=(-6, -1))
        g.add(MaxPool(2, 2), 2 * c, stage, stride_factor=2)
    c = w(512)
    g.add(Conv(g.channels_of(-1), c, 3, 1, act), c, "stage4")
    neck = g.add(Conv(c, w(256), 1, 1, act), w(256), "neck")
    g.add(Conv(w(256), w(512), 3, 1, act), w(512), "head")
    g.add(Conv(w(512), _head_channels(spec), 1, 1, "linear", bn=False), _head_channels(spec), "head")
    level32 = g.add(Identity(), _head_channels(spec), "head")
    g.add(Concat(), w(256), "neck", sources=(neck,))
    g.add(Conv(w(256), w(128), 1, 1, act), w(128), "neck")
    g.add(Upsample(2), w(128), "neck", stride_factor=0.5)
    g.add(Concat(), w(128) + w(256), "neck", sources=(-1, stage_outputs[-1]))
    g.add(Conv(w(128) + w(256), w(256), 3, 1, act), w(256), "head")
    g.add(Conv(w(256), _head_channels(spec), 1, 1, "linear", bn=False), _head_channels(spec), "head")
    level16 = g.add(Identity(), _head_channels(spec), "head")
    return g, [level16, level32]


def _csp_darknet_stage(g: GraphBuilder, c: int, depth: int, act: str, stage: str) -> int:
    """Darknet CSP stage: stride-2 conv, bypass 1x1, main 1x1 + `depth` residual units + 1x1, concat, 1x1."""
    down = g.add(Conv(g.channels_of(-1), c, 3, 2, act), c, stage, stride_factor=2)
    h = c // 2
    bypass = g.add(Conv(c, h, 1, 1, act), h, stage)
    g.add(Concat(), c, stage, sources=(down,))
    g.add(Conv(c, h, 1, 1, act), h, stage)
    for _ in range(depth):
        g.add(Conv(h, h, 1, 1, act), h, stage)
        g.add(Conv(h, h, 3, 1, act), h, stage)
        g.add(Shortcut(), h, stage, sources=(-1, -3))
    g.add(Conv(h, h, 1, 1, act), h, stage)
    g.add(Concat(), 2 * h, stage, sources=(-1, bypass))
    return g.add(Conv(2 * h, c, 1, 1, act), c, stage)


def _csp_pan_block(g: GraphBuilder, c: int, depth: int, act: str, stage: str) -> int:
    """Darknet CSP-PAN block: 1x1 in, bypass 1x1, main `depth` x (1x1, 3x3) without residual, concat, 1x1."""
    first = g.add(Conv(g.channels_of(-1), c, 1, 1, act), c, stage)
    bypass = g.add(Conv(c, c, 1, 1, act), c, stage)
    g.add(Concat(), c, stage, sources=(first,))
    for _ in range(depth):
        g.add(Conv(c, c, 1, 1, act), c, stage)
        g.add(Conv(c, c, 3, 1, act), c, stage)
    g.add(Concat(), 2 * c, stage, sources=(-1, bypass))
    return g.add(Conv(2 * c, c, 1, 1, act), c, stage)


def _darknet_sppcsp(g: GraphBuilder, c: int, act: str, stage: str) -> int:
    """Darknet SPPCSP: bypass 1x1; main 1x1, 3x3, 1x1, max pools 5/9/13, concat, 1x1, 3x3; concat, 1x1."""
    src = g.last
    bypass = g.add(Conv(g.channels_of(src), c, 1, 1, act), c, stage)
    g.add(Concat(), g.channels_of(src), stage, sources=(src,))
    g.add(Conv(g.channels_of(src), c, 1, 1, act), c, stage)
    g.add(Conv(c, c, 3, 1, act), c, stage)
    x = g.add(Conv(c, c, 1, 1, act), c, stage)
    p5 = g.add(MaxPool(5, 1), c, stage)
    g.add(Concat(), c, stage, sources=(x,))
    p9 = g.add(MaxPool(9, 1), c, stage)
    g.add(Concat(), c, stage, sources=(x,))
    p13 = g.add(MaxPool(13, 1), c, stage)
    g.add(Concat(), 4 * c, stage, sources=(p13, p9, p5, x))
    g.add(Conv(4 * c, c, 1, 1, act), c, stage)
    g.add(Conv(c, c, 3, 1, act), c, stage)
    g.add(Concat(), 2 * c, stage, sources=(-1, bypass))
    return g.add(Conv(2 * c, c, 1, 1, act), c, stage)


def build_csp(spec: "ModelSpec") -> tuple[GraphBuilder, list[int]]:
    """YOLOv4-CSP: CSPDarknet53s (first stage a plain residual unit), SPPCSP, CSP-PAN, three heads."""
    w = lambda c: make_divisible(c * spec.width)  # noqa: E731
    act = spec.activation
    g = GraphBuilder()
    g.add(Conv(3, w(32), 3, 1, act), w(32), "stem")
    c1 = w(64)
    g.add(Conv(w(32), c1, 3, 2, act), c1, "stage1", stride_factor=2)
    for _ in range(spec.depths[0]):
        g.add(Conv(c1, c1 // 2, 1, 1, act), c1 // 2, "stage1")
        g.add(Conv(c1 // 2, c1, 3, 1, act), c1, "stage1")
        g.add(Shortcut(), c1, "stage1", sources=(-1, -3))
    outputs = []
    for i in range(1, spec.stages):
        outputs.append(_csp_darknet_stage(g, w(64 * 2 ** i), spec.depths[i], act, f"stage{i + 1}"))
    nl = spec.stages - 2  # levels: strides 8 .. 2**stages
    lateral = [outputs[i] for i in range(1, nl)]  # backbone outputs at strides 8 .. 2**(stages-1)
    top = _darknet_sppcsp(g, w(512), act, "neck")
    neck_width = [w(min(128 * 2 ** i, 512)) for i in range(nl)]
    # top-down path
    pan_inputs = [top]
    for level in range(nl - 2, -1, -1):
        c = neck_width[level]
        g.add(Conv(g.channels_of(-1), c, 1, 1, act), c, "neck")
        g.add(Upsample(2), c, "neck", stride_factor=0.5)
        g.add(Concat(), g.channels_of(lateral[level]), "neck", sources=(lateral[level],))
        g.add(Conv(g.channels_of(lateral[level]), c, 1, 1, act), c, "neck")
        g.add(Concat(), 2 * c, "neck", sources=(-1, -3))
        pan_inputs.insert(0, _csp_pan_block(g, c, spec.neck_depth, act, "neck"))
    # bottom-up path with a head per level
    level_layers = []
    for level in range(nl):
        c = neck_width[level]
        if level:
            g.add(Concat(), g.channels_of(-4), "neck", sources=(-4,))
            g.add(Conv(g.channels_of(-1), c, 3, 2, act), c, "neck", stride_factor=2)
            g.add(Concat(), c + g.channels_of(pan_inputs[level]), "neck", sources=(-1, pan_inputs[level]))
            _csp_pan_block(g, c, spec.neck_depth, act, "neck")
        g.add(Conv(c, 2 * c, 3, 1, act), 2 * c, "head")
        g.add(Conv(2 * c, _head_channels(spec), 1, 1, "linear", bn=False), _head_channels(spec), "head")
        level_layers.append(g.add(Identity(), _head_channels(spec), "head"))
    return g, level_layers


def build_large(spec: "ModelSpec") -> tuple[GraphBuilder, list[int]]:
    """YOLOv4-P5/P6/P7: CSP backbone of `spec.stages` stages, SPPCSP, CSP2 PAN; Detect holds the output convs."""
    w = lambda c: make_divisible(c * spec.width)  # noqa: E731
    act = spec.activation
    g = GraphBuilder()
    g.add(Conv(3, w(32), 3, 1, act), w(32), "stem")
    stage_widths = [64, 128, 256, 512] + [1024] * (spec.stages - 4)
    outputs = []
    for i in range(spec.stages):
        stage = f"stage{i + 1}"
        c = w(stage_widths[i])
        g.add(Conv(g.channels_of(-1), c, 3, 2, act), c, stage, stride_factor=2)
        if i == 0 and spec.extra.get("first_stage") == "bottleneck":  # the official yolov4-csp.yaml
            outputs.append(g.add(Bottleneck(c, c, True, act, e=0.5), c, stage))
        else:
            outputs.append(g.add(BottleneckCSP(c, c, spec.depths[i], True, act), c, stage))
    nl = spec.stages - 2
    neck_width = [w(min(128 * 2 ** i, 512)) for i in range(nl)]
    top = g.add(SPPCSP(g.channels_of(-1), neck_width[-1], act), neck_width[-1], "neck")
    pan_inputs = [top]
    for level in range(nl - 2, -1, -1):
        c = neck_width[level]
        g.add(Conv(g.channels_of(-1), c, 1, 1, act), c, "neck")
        g.add(Upsample(2), c, "neck", stride_factor=0.5)
        lat = outputs[level + 2]
        g.add(Conv(g.channels_of(lat), c, 1, 1, act), c, "neck", sources=(lat,))
        g.add(Concat(), 2 * c, "neck", sources=(-1, -2))
        pan_inputs.insert(0, g.add(BottleneckCSP2(2 * c, c, spec.neck_depth, False, act), c, "neck"))
    level_layers = []
    for level in range(nl):
        c = neck_width[level]
        if level:
            g.add(Conv(g.channels_of(-2), c, 3, 2, act), c, "neck", sources=(-2,), stride_factor=2)
            g.add(Concat(), c + g.channels_of(pan_inputs[level]), "neck", sources=(-1, pan_inputs[level]))
            g.add(BottleneckCSP2(g.channels_of(-1), c, spec.neck_depth, False, act), c, "neck")
        level_layers.append(g.add(Conv(c, 2 * c, 3, 1, act), 2 * c, "head"))
    return g, level_layers


def build_darknet(spec: "ModelSpec") -> tuple[GraphBuilder, list[int]]:
    """Any darknet cfg (carried in `spec.extra['cfg']`), layer for layer: see `scaledyolo.interop.darknet`."""
    from scaledyolo.interop.darknet import build_darknet as build

    return build(spec)


ARCHITECTURES = {"tiny": build_tiny, "csp": build_csp, "large": build_large, "darknet": build_darknet}
