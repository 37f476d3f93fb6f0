"""Our darknet-born model -> darknet cfg text, one section per entry of its layer table (`layout`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from scaledyolo.interop.darknet.cfg import ACTIVATION_NAMES
from scaledyolo.interop.darknet.layout import CfgLayer, darknet_layout
from scaledyolo.models.layers import Conv
from scaledyolo.models.spec import ModelSpec

if TYPE_CHECKING:
    from scaledyolo.models.yolo import YOLO

CFG_ACTIVATIONS = {ours: theirs for theirs, ours in ACTIVATION_NAMES.items()}


def cfg_text(model: "YOLO") -> str:
    """A darknet cfg computing the model: [net] (the original's for darknet-arch specs), then one section per layer."""
    spec = model.spec
    layout = darknet_layout(model)
    out = [_net_section(spec)]
    for i, layer in enumerate(layout):
        if layer.kind == "convolutional":
            before_yolo = i + 1 < len(layout) and layout[i + 1].kind == "yolo"
            out.append(_conv_section(model.get_submodule(layer.module), spec.decode if before_yolo else None))
        elif layer.kind == "route":
            lines = ["[route]", "layers = " + ",".join(str(s - i) for s in layer.sources)]
            if layer.groups > 1:
                lines += [f"groups={layer.groups}", f"group_id={layer.group_id}"]
            out.append("\n".join(lines))
        elif layer.kind == "shortcut":
            other = layer.sources[1] if layer.sources[0] == i - 1 else layer.sources[0]
            out.append(f"[shortcut]\nfrom={other - i}\nactivation=linear")
        elif layer.kind == "maxpool":
            out.append(f"[maxpool]\nsize={layer.size}\nstride={layer.stride}")
        elif layer.kind == "upsample":
            out.append(f"[upsample]\nstride={layer.stride}")
        else:
            out.append(_yolo_section(spec, layer))
    return "\n\n".join(out) + "\n"


def _yolo_section(spec: ModelSpec, layer: CfgLayer) -> str:
    all_anchors = [a for level in spec.anchors for a in level]
    na = spec.num_anchors
    lines = ["[yolo]", "mask = " + ",".join(str(layer.level * na + a) for a in range(na)),
             "anchors = " + ", ".join(_number(a) for a in all_anchors),
             f"classes={spec.num_classes}", f"num={len(all_anchors) // 2}",
             f"scale_x_y = {_number(spec.level_scale_xy(layer.level))}"]
    if spec.decode == "scaled":
        lines.append("new_coords=1")
    return "\n".join(lines)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _net_section(spec: ModelSpec) -> str:
    original = spec.extra.get("cfg")
    if isinstance(original, str):
        match = re.search(r"^\s*\[net(?:work)?\][^\[]*", original, re.M)
        if match:
            return match.group(0).strip()
    return f"[net]\nbatch=1\nsubdivisions=1\nwidth={spec.img_size}\nheight={spec.img_size}\nchannels=3"


def _conv_section(module: nn.Module, decode_next: str | None) -> str:
    """`module`: a `Conv`, or the bare output `nn.Conv2d` of a head (bias, linear)."""
    c = module.conv if isinstance(module, Conv) else module
    act = CFG_ACTIVATIONS[module.act_name] if isinstance(module, Conv) else "linear"
    if decode_next == "scaled":
        act = "logistic"
    lines = ["[convolutional]"]
    if isinstance(module, Conv) and isinstance(module.bn, _BatchNorm):
        lines.append("batch_normalize=1")
    lines += [f"filters={c.out_channels}", f"size={c.kernel_size[0]}", f"stride={c.stride[0]}"]
    lines.append("pad=1" if c.padding[0] == c.kernel_size[0] // 2 else f"padding={c.padding[0]}")
    if c.groups > 1:
        lines.append(f"groups={c.groups}")
    lines.append(f"activation={act}")
    return "\n".join(lines)
