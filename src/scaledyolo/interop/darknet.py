"""Darknet `.cfg` / `.weights` in and out.

A darknet cfg is a list of layers, each reading the previous one unless it is a [route] or a
[shortcut]; our graph has the same form, so a cfg maps onto `scaledyolo.models.layers` layer for
layer (same indices) and a `.weights` file loads in convolution order. A cfg that is exactly a named
member (yolov4-tiny, yolov4-csp at any class count) becomes that member's `ModelSpec`; any other cfg
becomes a spec with `arch="darknet"` that carries the cfg text, so checkpoints of it rebuild.

Decoding: a [yolo] layer without `new_coords` is darknet's rule (logistic x/y scaled by
`scale_x_y`, exp w/h); with `new_coords=1` the conv before it ends in a logistic activation and the
yolo layer uses 2·σ−0.5 offsets and (2·σ)² sizes, which is our 'scaled' rule applied to the raw
map, so that conv becomes linear here and the sigmoid moves into `Detect.decode`.
"""

from __future__ import annotations

import os
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from scaledyolo.errors import UserError
from scaledyolo.files import atomic_write_bytes, atomic_write_text, plain_name
from scaledyolo.models.graph import GraphBuilder
from scaledyolo.models.layers import Concat, Conv, Identity, MaxPool, Shortcut, Upsample
from scaledyolo.models.spec import MAX_CFG_CHARS, MAX_CLASSES, MAX_IMG_SIZE, ModelSpec, get_spec

if TYPE_CHECKING:
    from scaledyolo.models.yolo import YOLO

NAMED_CFG_MEMBERS = ("yolov4-tiny", "yolov4-csp")
ACTIVATION_NAMES = {"leaky": "leaky", "mish": "mish", "linear": "linear", "logistic": "logistic",
                    "relu": "relu", "swish": "silu"}
WEIGHTS_VERSION = (0, 2, 5)  # major, minor, revision that darknet itself writes today
# Range of every integer option we read, whatever the section (see SECURITY.md): darknet's own cfgs stay far
# inside them (filters <= 2048, size <= 13, stride <= 2); a value outside is an error naming its line.
CFG_INT_RANGES = {
    "filters": (1, 4096), "size": (1, 15), "stride": (1, 8), "stride_x": (1, 8), "stride_y": (1, 8),
    "pad": (0, 1), "padding": (0, 15), "groups": (1, 4096), "group_id": (0, 4095), "batch_normalize": (0, 1),
    "classes": (1, MAX_CLASSES), "new_coords": (0, 1), "width": (32, MAX_IMG_SIZE), "height": (32, MAX_IMG_SIZE),
    "channels": (1, 4), "maxpool_depth": (0, 1),
}
MAX_CFG_SECTIONS = 2000  # yolov4-p7-sized cfgs have about 400


@dataclass
class Section:
    """One `[type]` block of a cfg with its `key=value` options and the line it starts on."""

    kind: str
    options: dict[str, str]
    line: int

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def int(self, key: str, default: int, path: str | Path | None = None) -> int:
        value = self.options.get(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise UserError(f"line {self.line}: [{self.kind}] {key}={value!r:.40} is not an integer", path) from None
        low, high = CFG_INT_RANGES.get(key, (-(1 << 31), (1 << 31) - 1))
        if not low <= number <= high:
            raise UserError(f"line {self.line}: [{self.kind}] {key}={number} is out of range ({low} to {high})", path)
        return number

    def float(self, key: str, default: float, path: str | Path | None = None) -> float:
        value = self.options.get(key)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise UserError(f"line {self.line}: [{self.kind}] {key}={value} is not a number", path) from None

    def ints(self, key: str, path: str | Path | None = None) -> list[int]:
        value = self.options.get(key, "")
        try:
            return [int(float(v)) for v in value.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"line {self.line}: [{self.kind}] {key}={value} is not a list of integers", path) from None

    def floats(self, key: str, path: str | Path | None = None) -> list[float]:
        value = self.options.get(key, "")
        try:
            return [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"line {self.line}: [{self.kind}] {key}={value} is not a list of numbers", path) from None


def parse_cfg(text: str, path: str | Path | None = None) -> list[Section]:
    """Split cfg text into sections (comments and blank lines dropped); the first must be [net]."""
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if len(sections) >= MAX_CFG_SECTIONS:
                raise UserError(f"line {number}: more than {MAX_CFG_SECTIONS} sections", path)
            if not line.endswith("]"):
                raise UserError(f"line {number}: unterminated section header {line!r}", path)
            sections.append(Section(line[1:-1].strip().lower(), {}, number))
            continue
        if "=" not in line or not sections:
            raise UserError(f"line {number}: expected key=value inside a [section], got {line!r}", path)
        key, value = line.split("=", 1)
        sections[-1].options[key.strip()] = value.strip()
    if not sections or sections[0].kind not in ("net", "network"):
        raise UserError("not a darknet cfg: it must start with a [net] section", path)
    return sections


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
class DarknetGraph:
    """A cfg turned into our layers: the graph, the yolo heads by increasing stride, and [net] options."""

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
    g.add(Conv(c1, filters, size, stride, act, bn=bn, groups=groups, padding=pad), filters, "darknet",
          stride_factor=stride)
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
    g.add(Concat(groups, group_id), channels // groups, "darknet", sources=tuple(sources))


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
    g.add(Shortcut(), g.channels_of(index - 1), "darknet", sources=(index - 1, other))


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
    g.add(Identity(), expected, "head")
    head.stride = g.stride_of(-1)
    return head


def build_graph(text: str, num_classes: int | None = None, anchors: list[list[float]] | None = None,
                path: str | Path | None = None) -> DarknetGraph:
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
            g.add(MaxPool(size, stride), g.channels_of(-1), "darknet", stride_factor=stride)
        elif s.kind == "upsample":
            stride = s.int("stride", 2, path)
            if stride < 1 or s.float("scale", 1.0, path) != 1.0:
                raise UserError(f"line {s.line}: only [upsample] with a positive stride and scale=1 is supported", path)
            g.add(Upsample(stride), g.channels_of(-1), "darknet", stride_factor=1 / stride)
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
    return DarknetGraph(g, heads, width, height, activations)


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


def _signature(builder: GraphBuilder) -> list[tuple]:
    """What makes two graphs compute the same thing with the same parameters, layer by layer."""
    sig = []
    for node, channels in zip(builder.nodes, builder.channels):
        m = node.module
        if isinstance(m, Conv):
            c = m.conv
            extra: tuple = (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.groups,
                            isinstance(m.bn, torch.nn.BatchNorm2d), m.act_name)
        elif isinstance(m, Concat):
            extra = (m.groups, m.group_id)
        elif isinstance(m, MaxPool):
            extra = (m.k, m.s)
        elif isinstance(m, Upsample):
            extra = (m.scale,)
        else:
            extra = ()
        sig.append((type(m).__name__, node.sources, channels) + extra)
    return sig


def spec_from_cfg(text: str, path: str | Path | None = None) -> ModelSpec:
    """The ModelSpec of a cfg: a named member when the cfg is one layer for layer, else `arch="darknet"`."""
    from scaledyolo.models.architectures import ARCHITECTURES

    with torch.device("meta"):  # layer shapes only: a cfg must not allocate its model before its size is checked
        graph = build_graph(text, path=path)
    heads = graph.heads
    anchors = [h.anchors for h in heads]
    scales = [h.scale_xy for h in heads]
    decode = "scaled" if heads[0].new_coords else "darknet"
    scale_xy: float | list[float] = 2.0 if decode == "scaled" else (scales[0] if len(set(scales)) == 1 else scales)
    img_size = max(graph.width, graph.height)
    stages = heads[-1].stride.bit_length() - 1
    signature = _signature(graph.builder)
    for name in NAMED_CFG_MEMBERS:
        if get_spec(name).num_levels != len(anchors):
            continue
        member = get_spec(name).replace(num_classes=heads[0].classes, anchors=anchors, img_size=img_size)
        if (member.decode, member.scale_xy) != (decode, scale_xy) or member.stages != stages:
            continue
        with torch.device("meta"):
            builder, levels = ARCHITECTURES[member.arch](member)
        if levels == graph.level_layers and _signature(builder) == signature:
            return member
    activation = Counter(a for a in graph.activations if a != "linear").most_common(1)
    try:
        return ModelSpec(name=Path(path).stem if path else "darknet", arch="darknet", img_size=img_size,
                         stages=stages, depths=[], width=1.0, activation=activation[0][0] if activation else "linear",
                         anchors=anchors, neck_depth=0, num_classes=heads[0].classes, decode=decode,
                         scale_xy=scale_xy, extra={"cfg": text})
    except UserError as exc:
        raise UserError(exc.message, path) from None


def build_darknet(spec: ModelSpec) -> tuple[GraphBuilder, list[int]]:
    """Generator for `arch="darknet"` specs: the cfg in `spec.extra['cfg']` with the spec's classes and anchors."""
    text = spec.extra.get("cfg")
    if not isinstance(text, str):
        raise UserError(f"model spec {spec.name!r} has arch 'darknet' but no cfg text in extra['cfg']")
    graph = build_graph(text, num_classes=spec.num_classes, anchors=spec.anchors)
    return graph.builder, graph.level_layers


# --------------------------------------------------------------------------- .weights


def _convs(model: "YOLO") -> list[Conv]:
    convs = [m for m in model.layers if isinstance(m, Conv)]
    if len(convs) != sum(1 for m in model.layers if not isinstance(m, (Concat, Shortcut, MaxPool, Upsample, Identity))):
        raise UserError(f"{model.spec.name} is not a darknet-born model (tiny, csp or a darknet cfg); "
                        "it has layers darknet .weights cannot hold")
    return convs


def _conv_tensors(conv: Conv) -> list[torch.Tensor]:
    """A convolution's tensors in .weights order: BN beta, gamma, mean, variance (or the bias), then the kernel."""
    head = ([conv.bn.bias, conv.bn.weight, conv.bn.running_mean, conv.bn.running_var]
            if isinstance(conv.bn, torch.nn.BatchNorm2d) else [conv.conv.bias])
    return head + [conv.conv.weight]


def _header_size(major: int, minor: int) -> int:
    return 12 + (8 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 4)


def read_weights_header(data: bytes, path: str | Path | None = None) -> tuple[tuple[int, int, int, int], int]:
    """(major, minor, revision, seen) and the header's byte size."""
    if len(data) < 16:
        raise UserError(f"not a darknet weights file ({len(data)} bytes, shorter than a header)", path)
    major, minor, revision = struct.unpack("<3i", data[:12])
    if not (0 <= major < 1000 and 0 <= minor < 1000 and 0 <= revision < 100000):
        raise UserError(f"not a darknet weights file (header says version {major}.{minor}.{revision})", path)
    size = _header_size(major, minor)
    seen = struct.unpack("<q" if size == 20 else "<i", data[12:size])[0]
    return (major, minor, revision, seen), size


def expected_weights_bytes(model: "YOLO", header_size: int) -> int:
    """The exact length of a `.weights` file for `model` (works on a meta-device model)."""
    return header_size + 4 * sum(t.numel() for c in _convs(model) for t in _conv_tensors(c))


def check_weights_length(model: "YOLO", path: str | Path) -> None:
    """Compare a `.weights` file's length with what the model needs, from its header and size alone."""
    path = Path(path)
    if not path.is_file():
        raise UserError("weights file not found", path)
    with open(path, "rb") as f:
        head = f.read(20)
        found = os.fstat(f.fileno()).st_size
    _, offset = read_weights_header(head, path)
    expected = expected_weights_bytes(model, offset)
    if found != expected:
        raise UserError(_length_message(model, _convs(model), found, expected), path)


def load_weights(model: "YOLO", path: str | Path) -> tuple[int, int, int, int]:
    """Fill the model's convolutions from a darknet `.weights` file; returns its header.

    The file must hold exactly what the cfg needs: a header, then per convolution BN beta, gamma,
    running mean, running variance (or the bias), then the kernel, all float32 little-endian.
    """
    path = Path(path)
    check_weights_length(model, path)
    data = path.read_bytes()
    header, offset = read_weights_header(data, path)
    convs = _convs(model)
    if len(data) != expected_weights_bytes(model, offset):  # the file changed since it was checked
        raise UserError("the weights file changed while it was read", path)
    values = np.frombuffer(data, dtype="<f4", offset=offset)
    if not np.isfinite(values).all():
        raise UserError("the weights file holds NaN or infinite values (damaged or not a weights file)", path)
    pos = 0

    def take(t: torch.Tensor) -> None:
        nonlocal pos
        n = t.numel()
        t.data.copy_(torch.from_numpy(values[pos:pos + n].copy()).view_as(t))
        pos += n

    with torch.no_grad():
        for conv in convs:
            for t in _conv_tensors(conv):
                take(t)
    return header


def _length_message(model: "YOLO", convs: list[Conv], found: int, expected: int) -> str:
    message = f"weights file has the wrong length: the cfg needs {expected} bytes, found {found}"
    heads = [model.layers[i - 1] for i in model.level_layers]
    per_class = sum(model.detect.na * (h.conv.in_channels * h.conv.kernel_size[0] ** 2 + 1) for h in heads) * 4
    diff = found - expected
    if per_class and diff % per_class == 0 and model.num_classes + diff // per_class >= 1:
        other = model.num_classes + diff // per_class
        message += (f"; it looks made for {other} classes while the cfg has {model.num_classes}: use the cfg it was "
                    f"trained with, or fine-tune to {model.num_classes} classes with `scaledyolo train --weights`")
    return message


def weights_bytes(model: "YOLO", header: tuple[int, int, int, int] | None = None) -> bytes:
    """The darknet `.weights` content of a model (header `major, minor, revision, seen`)."""
    major, minor, revision, seen = header or (*WEIGHTS_VERSION, 0)
    parts = [struct.pack("<3i", major, minor, revision),
             struct.pack("<q" if _header_size(major, minor) == 20 else "<i", seen)]
    for conv in _convs(model):
        for t in _conv_tensors(conv):
            parts.append(t.detach().cpu().float().numpy().astype("<f4").tobytes())
    return b"".join(parts)


def save_weights(model: "YOLO", path: str | Path, header: tuple[int, int, int, int] | None = None) -> None:
    """Write the model's darknet `.weights` atomically."""
    atomic_write_bytes(path, weights_bytes(model, header))


# --------------------------------------------------------------------------- cfg writer


def cfg_text(model: "YOLO") -> str:
    """A darknet cfg computing the model: [net] (the original's for darknet-arch specs), then one section per layer."""
    spec = model.spec
    _convs(model)
    net = _net_section(spec)
    levels = {layer: level for level, layer in enumerate(model.level_layers)}
    all_anchors = [a for level in spec.anchors for a in level]
    na = spec.num_anchors
    out = [net]
    for i, (m, sources) in enumerate(zip(model.layers, model.sources)):
        if not isinstance(m, (Concat, Shortcut)) and sources != (i - 1,) and not (i == 0 and sources == (-1,)):
            raise UserError(f"{spec.name}: layer {i} reads layer {sources}, which a darknet cfg cannot express")
        if isinstance(m, Conv):
            out.append(_conv_section(m, decode_next=spec.decode if i + 1 in levels else None))
        elif isinstance(m, Concat):
            lines = ["[route]", "layers = " + ",".join(str(s - i) for s in sources)]
            if m.groups > 1:
                lines += [f"groups={m.groups}", f"group_id={m.group_id}"]
            out.append("\n".join(lines))
        elif isinstance(m, Shortcut):
            other = sources[1] if sources[0] == i - 1 else sources[0]
            out.append(f"[shortcut]\nfrom={other - i}\nactivation=linear")
        elif isinstance(m, MaxPool):
            out.append(f"[maxpool]\nsize={m.k}\nstride={m.s}")
        elif isinstance(m, Upsample):
            out.append(f"[upsample]\nstride={m.scale}")
        elif isinstance(m, Identity) and i in levels:
            level = levels[i]
            scale = spec.level_scale_xy(level)
            lines = ["[yolo]", "mask = " + ",".join(str(level * na + a) for a in range(na)),
                     "anchors = " + ", ".join(_number(a) for a in all_anchors),
                     f"classes={spec.num_classes}", f"num={len(all_anchors) // 2}", f"scale_x_y = {_number(scale)}"]
            if spec.decode == "scaled":
                lines.append("new_coords=1")
            out.append("\n".join(lines))
        else:
            raise UserError(f"{spec.name}: layer {i} ({type(m).__name__}) has no darknet equivalent")
    return "\n\n".join(out) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _net_section(spec: ModelSpec) -> str:
    original = spec.extra.get("cfg")
    if isinstance(original, str):
        match = re.search(r"^\s*\[net(?:work)?\][^\[]*", original, re.M)
        if match:
            return match.group(0).strip()
    return f"[net]\nbatch=1\nsubdivisions=1\nwidth={spec.img_size}\nheight={spec.img_size}\nchannels=3"


def _conv_section(m: Conv, decode_next: str | None) -> str:
    c = m.conv
    act = {v: k for k, v in ACTIVATION_NAMES.items()}[m.act_name]
    if decode_next == "scaled":
        act = "logistic"
    lines = ["[convolutional]"]
    if isinstance(m.bn, torch.nn.BatchNorm2d):
        lines.append("batch_normalize=1")
    lines += [f"filters={c.out_channels}", f"size={c.kernel_size[0]}", f"stride={c.stride[0]}"]
    lines.append("pad=1" if c.padding[0] == c.kernel_size[0] // 2 else f"padding={c.padding[0]}")
    if c.groups > 1:
        lines.append(f"groups={c.groups}")
    lines.append(f"activation={act}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- files


def model_from_cfg(cfg: str | Path, weights: str | Path | None = None) -> "YOLO":
    """Build the model of a cfg file and, when given, load its `.weights`."""
    from scaledyolo.models.yolo import YOLO, meta_model

    cfg = Path(cfg)
    if not cfg.is_file():
        raise UserError("cfg file not found", cfg)
    if cfg.stat().st_size > MAX_CFG_CHARS:
        raise UserError(f"not a darknet cfg ({cfg.stat().st_size} bytes; the limit is {MAX_CFG_CHARS})", cfg)
    try:
        text = cfg.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError("not a darknet cfg (not UTF-8 text)", cfg) from None
    spec = spec_from_cfg(text, cfg)
    try:
        if weights is not None:  # the length is checked before the model takes any memory
            check_weights_length(meta_model(spec), weights)
        model = YOLO(spec)
    except UserError as exc:
        raise UserError(exc.message, exc.path or cfg) from None
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def export_darknet(model: "YOLO", output: str | Path, stem: str | None = None) -> tuple[Path, Path]:
    """Write `STEM.cfg` and `STEM.weights` into the folder `output`; returns both paths.

    `stem` defaults to the model's spec name, which may come from a file: it must then be a plain file
    name (`scaledyolo.files.plain_name`), so a spec named `../../x` cannot write outside `output`.
    """
    output = Path(output)
    stem = plain_name(model.spec.name if stem is None else stem, "model name")
    text = cfg_text(model)
    data = weights_bytes(model)
    cfg_path, weights_path = output / f"{stem}.cfg", output / f"{stem}.weights"
    atomic_write_text(cfg_path, text)
    atomic_write_bytes(weights_path, data)
    return cfg_path, weights_path
