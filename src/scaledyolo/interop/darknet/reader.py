"""Cfg sections -> the generic graph (`graph.DarknetGraph`), every layer's shape and reference checked.

Decoding: a [yolo] layer without `new_coords` is darknet's rule (logistic x/y scaled by
`scale_x_y`, exp w/h); with `new_coords=1` the conv before it ends in a logistic activation and the
yolo layer uses 2·σ−0.5 offsets and (2·σ)² sizes, which is our 'scaled' rule applied to the raw
map, so that conv becomes linear here and the sigmoid moves into the shared decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scaledyolo.errors import UserError
from scaledyolo.interop.darknet.cfg import ACTIVATION_NAMES, Section, parse_cfg
from scaledyolo.interop.darknet.graph import GraphBuilder, MaxPool, Route, Shortcut, Upsample, YoloInput
from scaledyolo.models.layers import Conv


@dataclass
class YoloHead:
    """What a [yolo] layer says about its level: anchors (pixels), decoding and class count."""

    layer: int
    anchors: list[float]
    classes: int
    scale_xy: float
    new_coords: bool
    stride: int = 0


@dataclass
class ParsedCfg:
    """A cfg turned into layers: the graph, the yolo heads by increasing stride, and [net] options."""

    builder: GraphBuilder
    heads: list[YoloHead]
    width: int
    height: int
    activations: list[str] = field(default_factory=list)

    @property
    def level_layers(self) -> list[int]:
        return [h.layer for h in self.heads]


def _conv(g: GraphBuilder, s: Section, filters_override: int | None, act_override: str | None,
          path: str | Path | None) -> str:
    for key in ("dilation", "antialiasing", "share_index", "binary", "xnor", "deform", "assisted_excitation"):
        if s.int(key, 1 if key == "dilation" else 0, path) != (1 if key == "dilation" else 0):
            raise UserError(f"line {s.line}: [convolutional] {key} is not supported", path)
    stride = s.int("stride", 1, path)
    if s.int("stride_x", stride, path) != stride or s.int("stride_y", stride, path) != stride:
        raise UserError(f"line {s.line}: [convolutional] with different x and y strides is not supported", path)
    filters = filters_override or s.int("filters", 1, path)
    size = s.int("size", 1, path)
    pad = size // 2 if s.int("pad", 0, path) else s.int("padding", 0, path)
    groups = s.int("groups", 1, path)
    act_name = s.get("activation", "logistic")
    if act_name not in ACTIVATION_NAMES:
        raise UserError(f"line {s.line}: activation {act_name!r} is not supported "
                        f"(supported: {', '.join(ACTIVATION_NAMES)})", path)
    act = act_override or ACTIVATION_NAMES[act_name]
    c1 = g.channels_of(-1)
    if c1 % groups or filters % groups:
        raise UserError(f"line {s.line}: groups={groups} does not divide {c1} input / {filters} output channels", path)
    bn = bool(s.int("batch_normalize", 0, path))
    g.add(Conv(c1, filters, size, stride, act, bn=bn, groups=groups, padding=pad), filters, stride_factor=stride)
    return act


def _route(g: GraphBuilder, s: Section, path: str | Path | None) -> None:
    index = len(g.nodes)
    sources = []
    for value in s.ints("layers", path):
        absolute = index + value if value < 0 else value
        if not 0 <= absolute < index:
            raise UserError(f"line {s.line}: [route] layer {value} does not exist before layer {index}", path)
        sources.append(absolute)
    if not sources:
        raise UserError(f"line {s.line}: [route] needs layers=", path)
    groups, group_id = s.int("groups", 1, path), s.int("group_id", 0, path)
    if groups > 1 and len(sources) > 1:
        raise UserError(f"line {s.line}: [route] with groups over several layers is not supported", path)
    strides = {g.stride_of(i) for i in sources}
    if len(strides) > 1:
        raise UserError(f"line {s.line}: [route] joins layers of different sizes", path)
    channels = sum(g.channels_of(i) for i in sources)
    if channels % groups or not 0 <= group_id < groups:
        raise UserError(f"line {s.line}: [route] groups={groups} group_id={group_id} do not fit {channels} channels",
                        path)
    g.add(Route(groups, group_id), channels // groups, sources=tuple(sources))


def _shortcut(g: GraphBuilder, s: Section, path: str | Path | None) -> None:
    index = len(g.nodes)
    values = s.ints("from", path)
    if len(values) != 1:
        raise UserError(f"line {s.line}: [shortcut] needs exactly one from= layer", path)
    if s.get("activation", "linear") != "linear" or s.get("weights_type", "none") != "none":
        raise UserError(f"line {s.line}: only linear, unweighted [shortcut] layers are supported", path)
    other = index + values[0] if values[0] < 0 else values[0]
    if not 0 <= other < index:
        raise UserError(f"line {s.line}: [shortcut] from={values[0]} does not exist", path)
    if g.channels_of(other) != g.channels_of(index - 1) or g.stride_of(other) != g.stride_of(index - 1):
        raise UserError(f"line {s.line}: [shortcut] adds layers of different shapes", path)
    g.add(Shortcut(), g.channels_of(index - 1), sources=(index - 1, other))


def _yolo(g: GraphBuilder, s: Section, num_classes: int | None, anchors: list[float] | None,
          path: str | Path | None) -> YoloHead:
    mask = s.ints("mask", path)
    all_anchors = s.floats("anchors", path)
    if len(all_anchors) % 2:
        raise UserError(f"line {s.line}: [yolo] anchors must be width,height pairs", path)
    if not mask:
        mask = list(range(len(all_anchors) // 2))
    if any(not 0 <= m < len(all_anchors) // 2 for m in mask):
        raise UserError(f"line {s.line}: [yolo] mask {mask} points past the {len(all_anchors) // 2} anchors", path)
    level_anchors = anchors or [a for m in mask for a in all_anchors[2 * m:2 * m + 2]]
    classes = num_classes or s.int("classes", 20, path)
    head = YoloHead(len(g.nodes), [float(a) for a in level_anchors], classes, s.float("scale_x_y", 1.0, path),
                    bool(s.int("new_coords", 0, path)))
    expected = len(level_anchors) // 2 * (classes + 5)
    if g.channels_of(-1) != expected:
        raise UserError(f"line {s.line}: the convolution before this [yolo] has {g.channels_of(-1)} filters, "
                        f"but {len(level_anchors) // 2} anchors x ({classes} classes + 5) = {expected}", path)
    if head.new_coords and head.scale_xy != 2.0:
        raise UserError(f"line {s.line}: new_coords=1 is supported with scale_x_y=2.0 only", path)
    g.add(YoloInput(), expected)
    head.stride = g.stride_of(-1)
    return head


def build_graph(text: str, num_classes: int | None = None, anchors: list[list[float]] | None = None,
                path: str | Path | None = None) -> ParsedCfg:
    """Turn cfg text into our layers; `num_classes` / `anchors` (per level, by stride) override the cfg's."""
    sections = parse_cfg(text, path)
    net = sections[0]
    if net.int("channels", 3, path) != 3:
        raise UserError("only 3-channel inputs are supported", path)
    layers = sections[1:]
    yolo_positions = [i for i, s in enumerate(layers) if s.kind == "yolo"]
    if not yolo_positions:
        raise UserError("the cfg has no [yolo] layer", path)
    level_of = _levels_by_stride(layers, path)
    g = GraphBuilder()
    heads: list[YoloHead] = []
    activations: list[str] = []
    for i, s in enumerate(layers):
        next_is_yolo = i + 1 < len(layers) and layers[i + 1].kind == "yolo"
        if s.kind in ("convolutional", "conv"):
            filters = act = None
            if next_is_yolo:
                yolo = layers[i + 1]
                if num_classes or anchors:
                    na = (len(anchors[level_of[i + 1]]) // 2 if anchors
                          else len(yolo.ints("mask", path) or yolo.floats("anchors", path)[::2]))
                    filters = na * ((num_classes or yolo.int("classes", 20, path)) + 5)
                new_coords = bool(yolo.int("new_coords", 0, path))
                wanted = "logistic" if new_coords else "linear"
                if s.get("activation", "logistic") != wanted:
                    raise UserError(f"line {s.line}: the convolution before a [yolo] with new_coords={int(new_coords)} "
                                    f"must use activation={wanted}", path)
                act = "linear"
            activations.append(_conv(g, s, filters, act, path))
        elif s.kind == "route":
            _route(g, s, path)
        elif s.kind == "shortcut":
            _shortcut(g, s, path)
        elif s.kind in ("maxpool", "max"):
            size, stride = s.int("size", 1, path), s.int("stride", 1, path)
            if s.int("padding", size - 1, path) != size - 1 or s.int("maxpool_depth", 0, path):
                raise UserError(f"line {s.line}: [maxpool] with custom padding or depth is not supported", path)
            g.add(MaxPool(size, stride), g.channels_of(-1), stride_factor=stride)
        elif s.kind == "upsample":
            stride = s.int("stride", 2, path)
            if stride < 1 or s.float("scale", 1.0, path) != 1.0:
                raise UserError(f"line {s.line}: only [upsample] with a positive stride and scale=1 is supported", path)
            g.add(Upsample(stride), g.channels_of(-1), stride_factor=1 / stride)
        elif s.kind == "yolo":
            if i == 0 or layers[i - 1].kind not in ("convolutional", "conv"):
                raise UserError(f"line {s.line}: a [yolo] layer must follow a [convolutional] layer", path)
            level = level_of[i]
            heads.append(_yolo(g, s, num_classes, anchors[level] if anchors else None, path))
        else:
            raise UserError(f"line {s.line}: unknown or unsupported layer type [{s.kind}]", path)
    heads.sort(key=lambda h: h.stride)
    _check_heads(heads, path)
    width, height = net.int("width", 416, path), net.int("height", 416, path)
    return ParsedCfg(g, heads, width, height, activations)


def _levels_by_stride(layers: list[Section], path: str | Path | None) -> dict[int, int]:
    """Section index of each [yolo] -> its level (rank by stride), from a cheap stride walk of the cfg."""
    strides: list[float] = []
    for s in layers:
        prev = strides[-1] if strides else 1.0
        if s.kind in ("convolutional", "conv", "maxpool", "max"):
            strides.append(prev * s.int("stride", 1, path))
        elif s.kind == "upsample":
            strides.append(prev / s.int("stride", 2, path))
        elif s.kind == "route":
            first = s.ints("layers", path)[:1] or [-1]
            index = len(strides) + first[0] if first[0] < 0 else first[0]
            strides.append(strides[index] if 0 <= index < len(strides) else prev)
        else:
            strides.append(prev)
    yolos = [i for i, s in enumerate(layers) if s.kind == "yolo"]
    order = sorted(yolos, key=lambda i: strides[i])
    return {i: order.index(i) for i in yolos}


def _check_heads(heads: list[YoloHead], path: str | Path | None) -> None:
    strides = [h.stride for h in heads]
    top = strides[-1]
    if top & (top - 1) or strides != [top // 2 ** i for i in range(len(heads))][::-1]:
        raise UserError(f"[yolo] layers must sit at consecutive power-of-two strides, got {strides}", path)
    if len({len(h.anchors) for h in heads}) > 1:
        raise UserError("every [yolo] layer must use the same number of anchors (mask=)", path)
    if len({h.classes for h in heads}) > 1:
        raise UserError("the [yolo] layers disagree on classes=", path)
    if len({h.new_coords for h in heads}) > 1:
        raise UserError("mixing [yolo] layers with and without new_coords is not supported", path)


