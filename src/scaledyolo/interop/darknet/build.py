"""Building from darknet files: cfg -> `ModelSpec` (a named member when it is one), cfg + weights ->
model, model -> cfg + weights.

A cfg that is one of our darknet-born members (yolov4-tiny, yolov4-csp, with its own classes,
anchors and input size) becomes that member's spec, so it is built from named blocks and its
weights land through the layer table (`layout`). Any other cfg (yolov4-tiny-3l, a cfg with an extra
layer) is kept, not refused: it becomes a spec with `arch="darknet"` that carries the cfg text and
runs through the generic graph (`graph`), so a user's own darknet model still converts, fine-tunes,
exports and rebuilds from its checkpoint; only layer types we do not implement are refused, with
the line that holds them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from scaledyolo.errors import UserError
from scaledyolo.files import atomic_write_bytes, atomic_write_text, plain_name
from scaledyolo.interop.darknet.graph import DarknetGraph, GraphBuilder, MaxPool, RawMaps, Route, SelectLevels, Upsample
from scaledyolo.interop.darknet.reader import build_graph
from scaledyolo.interop.darknet.weights import check_weights_length, load_weights, weights_bytes
from scaledyolo.interop.darknet.writer import cfg_text
from scaledyolo.models.architectures import Network
from scaledyolo.models.layers import Conv
from scaledyolo.models.spec import MAX_CFG_CHARS, ModelSpec, get_spec
from scaledyolo.models.yolo import YOLO, meta_model

NAMED_CFG_MEMBERS = ("yolov4-tiny", "yolov4-csp")


def build_darknet(spec: ModelSpec) -> Network:
    """Generator for `arch="darknet"` specs: the cfg in `spec.extra['cfg']` with the spec's classes and anchors."""
    text = spec.extra.get("cfg")
    if not isinstance(text, str):
        raise UserError(f"model spec {spec.name!r} has arch 'darknet' but no cfg text in extra['cfg']")
    parsed = build_graph(text, num_classes=spec.num_classes, anchors=spec.anchors)
    nodes = parsed.builder.nodes
    outputs = [nodes[i - 1].module.conv for i in parsed.level_layers]
    return Network(DarknetGraph(nodes, parsed.level_layers), SelectLevels(), RawMaps(), outputs)


def _signature(builder: GraphBuilder) -> list[tuple]:
    """What makes two graphs compute the same thing with the same parameters, layer by layer."""
    sig = []
    for node, channels in zip(builder.nodes, builder.channels):
        m = node.module
        if isinstance(m, Conv):
            c = m.conv
            extra: tuple = (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.groups,
                            isinstance(m.bn, _BatchNorm), m.act_name)
        elif isinstance(m, Route):
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
    """The ModelSpec of a cfg: a named member when the cfg is one layer for layer (at any class count,
    anchors and input size: the cfg writes them), else `arch="darknet"` carrying the cfg text."""
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
            written = build_graph(cfg_text(meta_model(member)))
        if written.level_layers == graph.level_layers and _signature(written.builder) == signature:
            return member
    activation = Counter(a for a in graph.activations if a != "linear").most_common(1)
    try:
        return ModelSpec(name=Path(path).stem if path else "darknet", arch="darknet", img_size=img_size,
                         stages=stages, depths=[], width=1.0, activation=activation[0][0] if activation else "linear",
                         anchors=anchors, neck_depth=0, num_classes=heads[0].classes, decode=decode,
                         scale_xy=scale_xy, extra={"cfg": text})
    except UserError as exc:
        raise UserError(exc.message, path) from None


def model_from_cfg(cfg: str | Path, weights: str | Path | None = None) -> "YOLO":
    """Build the model of a cfg file and, when given, load its `.weights`."""
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
