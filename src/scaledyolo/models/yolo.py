"""Assembly of a member: the layer graph, the `Detect` head, inference fusion and once-for-all subnets.

Train-mode forward returns raw maps, one per level, `(B, anchors, H, W, 5 + nc)` before activation.
Eval-mode forward returns one tensor `(B, N, 5 + nc)`: cx, cy, w, h in input pixels, objectness and
per-class probabilities, levels by increasing stride, each flattened in (anchor, y, x) order.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from scaledyolo.errors import UserError
from scaledyolo.models.architectures import ARCHITECTURES
from scaledyolo.models.graph import Node
from scaledyolo.models.layers import Conv, set_batchnorm
from scaledyolo.models.spec import ModelSpec, get_spec


class Detect(nn.Module):
    """Per-level output convolutions (large members) and decoding of raw maps into boxes.

    `convs` is empty for the darknet-born members, whose output convolutions are graph layers.
    """

    def __init__(self, spec: ModelSpec, in_channels: Sequence[int] | None) -> None:
        super().__init__()
        self.nc = spec.num_classes
        self.no = spec.num_classes + 5
        self.na = spec.num_anchors
        self.decode_rule = spec.decode
        self.scale_xy = [spec.level_scale_xy(level) for level in range(spec.num_levels)]
        self.strides = list(spec.strides)
        self.register_buffer("anchors", torch.tensor(spec.anchors, dtype=torch.float32).view(len(spec.anchors), -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in (in_channels or ()))
        self._grids: dict[tuple[int, int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def raw(self, features: list[torch.Tensor], levels: Sequence[int]) -> list[torch.Tensor]:
        """Apply the output convs (if any) and reshape each level to (B, A, H, W, 5 + nc)."""
        maps = []
        for level, x in zip(levels, features):
            if len(self.m):
                x = self.m[level](x)
            b, _, h, w = x.shape
            maps.append(x.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return maps

    def _grid(self, level: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        key = (level, h, w, like.device, like.dtype)
        grid = self._grids.get(key)
        if grid is None:
            ys, xs = torch.meshgrid(torch.arange(h, device=like.device), torch.arange(w, device=like.device), indexing="ij")
            grid = torch.stack((xs, ys), -1).view(1, 1, h, w, 2).to(like.dtype)
            self._grids[key] = grid
        return grid

    def decode(self, maps: list[torch.Tensor], levels: Sequence[int]) -> torch.Tensor:
        """Raw maps -> (B, N, 5 + nc) boxes in input pixels; `levels` names which levels `maps` are."""
        out = []
        for level, x in zip(levels, maps):
            b, a, h, w, _ = x.shape
            grid = self._grid(level, h, w, x)
            anchor = self.anchors[level].to(x.dtype).view(1, a, 1, 1, 2)
            stride = self.strides[level]
            y = x.sigmoid()
            if self.decode_rule == "darknet":
                scale = self.scale_xy[level]
                xy = (y[..., :2] * scale - 0.5 * (scale - 1) + grid) * stride
                wh = torch.exp(x[..., 2:4]) * anchor
            else:
                xy = (y[..., :2] * 2.0 - 0.5 + grid) * stride
                wh = (y[..., 2:4] * 2.0) ** 2 * anchor
            out.append(torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, self.no))
        return torch.cat(out, 1)


# The most parameters a spec may ask for (P7, the largest member, has 287.6M: 1.15 GB in float32). A spec
# comes from files (checkpoints, YAML, darknet cfgs), so its size is counted before any memory is allocated.
MAX_PARAMETERS = 300_000_000


def meta_model(spec: ModelSpec) -> "YOLO":
    """The model of `spec` on the meta device: shapes and parameter counts without allocating any memory."""
    with torch.device("meta"):
        return YOLO(spec)


def check_model_size(spec: ModelSpec) -> None:
    """Refuse (UserError) a valid spec whose model would have more than MAX_PARAMETERS parameters."""
    if torch.get_default_device().type == "meta":  # this is the count itself
        return
    count = sum(p.numel() for p in meta_model(spec).parameters())
    if count > MAX_PARAMETERS:
        raise UserError(f"model spec {spec.name!r} asks for {count:,} parameters, more than the limit of "
                        f"{MAX_PARAMETERS:,} (the largest member, yolov4-p7, has 287,575,580)")


def state_mismatch(model: nn.Module, state: Any) -> str | None:
    """Why `state` cannot be loaded into `model` (None when it can); `model` is a `meta_model`.

    Checked before the real model is built, so a small file cannot make us allocate a large model it does
    not hold the weights of; each tensor must also be backed by as many bytes as its shape needs.
    """
    if not isinstance(state, dict):
        return "the weights are not a mapping of tensor names to tensors"
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(map(str, set(state) - set(expected)))
    if missing or unexpected:
        return f"missing {missing[:3]} unexpected {unexpected[:3]}"
    for key, tensor in expected.items():
        found = state[key]
        if not isinstance(found, torch.Tensor):
            return f"{key} is not a tensor"
        if found.shape != tensor.shape:
            return f"{key} has shape {tuple(found.shape)}, expected {tuple(tensor.shape)}"
        if found.numel() * found.element_size() > found.untyped_storage().nbytes():
            return f"{key} has more elements than the bytes stored for it"
    return None


class YOLO(nn.Module):
    """A Scaled-YOLOv4 member built from a `ModelSpec`."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        spec.validate()
        check_model_size(spec)
        self.spec = spec
        builder, level_layers = ARCHITECTURES[spec.arch](spec)
        self._init_graph(builder.nodes, level_layers)
        self.detect = Detect(spec, [builder.channels[i] for i in level_layers] if spec.arch == "large" else None)
        self.names: list[str] = [str(i) for i in range(spec.num_classes)]
        set_batchnorm(self, spec.bn_eps, spec.bn_momentum)
        self._initialize_biases()

    def _init_graph(self, nodes: list[Node], level_layers: list[int]) -> None:
        self.layers = nn.ModuleList(n.module for n in nodes)
        self.sources = [n.sources for n in nodes]
        self.stages = [n.stage for n in nodes]
        self.level_layers = list(level_layers)
        self.levels = list(range(len(level_layers)))
        self._plan()

    def _plan(self) -> None:
        """Which layers to run (those the kept levels depend on) and which outputs to keep."""
        needed: set[int] = set()
        stack = [self.level_layers[i] for i in self.levels]
        while stack:
            i = stack.pop()
            if i < 0 or i in needed:
                continue
            needed.add(i)
            stack.extend(self.sources[i])
        self.run_order = sorted(needed)
        self.keep = {s for i in self.run_order for s in self.sources[i] if s != i - 1} | {
            self.level_layers[i] for i in self.levels}

    @property
    def strides(self) -> list[int]:
        return [self.spec.strides[i] for i in self.levels]

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def _initialize_biases(self) -> None:
        """Objectness and class priors in the output biases (8 objects per 640 image; p(class) 0.6/nc)."""
        convs = list(self.detect.m) if len(self.detect.m) else [self.layers[i - 1].conv for i in self.level_layers]
        for conv, stride in zip(convs, self.spec.strides):
            bias = conv.bias.detach().view(self.detect.na, -1)
            bias[:, 4] += math.log(8 / (640 / stride) ** 2)
            bias[:, 5:] += math.log(0.6 / (self.num_classes - 0.99))
            conv.bias.data.copy_(bias.view(-1))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the graph and return the inputs of the kept detection levels."""
        outputs: dict[int, torch.Tensor] = {-1: x}
        prev = x
        for i in self.run_order:
            src = self.sources[i]
            inp = (outputs[src[0]] if src[0] != i - 1 else prev) if len(src) == 1 else [
                outputs[s] if s != i - 1 else prev for s in src]
            prev = self.layers[i](inp)
            if i in self.keep:
                outputs[i] = prev
        return [outputs[self.level_layers[i]] for i in self.levels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        maps = self.detect.raw(self.features(x), self.levels)
        if self.training:
            return maps
        return self.detect.decode(maps, self.levels)

    def fuse(self) -> "YOLO":
        """Fold every BatchNorm that follows a convolution into it (inference only); returns self."""
        for module in self.modules():
            if isinstance(module, Conv) and isinstance(module.bn, _BatchNorm):
                module.conv = fuse_conv_bn(module.conv, module.bn)
                module.bn = nn.Identity()
        return self

    def subnet(self, levels: Sequence[int] | str) -> "YOLO":
        """A copy that computes only the given detection levels (indices or 'p7-p7-p6'-style names).

        The once-for-all subnets of the paper: the layers the dropped levels alone need are removed,
        so the output equals the full model's output restricted to the kept levels.
        """
        keep = parse_levels(levels, self.spec) if isinstance(levels, str) else sorted(set(int(i) for i in levels))
        if not keep or any(i < 0 or i >= len(self.level_layers) for i in keep):
            raise ValueError(f"levels must be within 0..{len(self.level_layers) - 1}, got {keep}")
        sub = copy.deepcopy(self)
        sub.levels = keep
        sub._plan()
        unused = set(range(len(sub.layers))) - set(sub.run_order)
        for i in unused:
            sub.layers[i] = nn.Identity()
        return sub

    def predict(self, images: Any, conf: float = 0.25, iou: float = 0.45, img: int | None = None, **kwargs: Any) -> list:
        """Detect objects in paths, HxWx3 RGB arrays or PIL images: see `scaledyolo.predict.predict`."""
        from scaledyolo.predict import predict

        return predict(self, images, conf=conf, iou=iou, img=img, **kwargs)


def parse_levels(text: str, spec: ModelSpec) -> list[int]:
    """'p7-p7-p6' (the paper's notation: model, then kept output levels) -> level indices."""
    parts = [p.strip().lower() for p in text.split("-") if p.strip()]
    names = {f"p{s.bit_length() - 1}": i for i, s in enumerate(spec.strides)}
    if len(parts) > 1 and parts[0].startswith("p"):  # the first part names the model
        parts = parts[1:]
    try:
        return sorted({names[p] for p in parts})
    except KeyError as exc:
        from scaledyolo.errors import UserError

        raise UserError(f"unknown level {exc.args[0]!r} in {text!r}; this model has {', '.join(names)}") from None


def bn_affine(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel (scale, shift) an eval-mode batch norm applies, in float32.

    Any `_BatchNorm` (BatchNorm2d, or the SyncBatchNorm a DDP run leaves in its EMA model).
    """
    scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    return scale, bn.bias.detach().float() - bn.running_mean.float() * scale


def scaled_conv(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """`conv` followed by a per-output-channel affine, as one convolution with a bias.

    Computed in float32, stored in `conv`'s own dtype and device (fusing an fp16/bf16 model keeps it so).
    """
    weight = conv.weight.detach()
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).to(device=weight.device, dtype=weight.dtype)
    fused.weight.data.copy_(weight.float() * scale.view(-1, 1, 1, 1))
    bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.data.copy_(bias * scale + shift)
    return fused


def fuse_conv_bn(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """A convolution computing conv followed by (eval-mode) batch norm."""
    return scaled_conv(conv, *bn_affine(bn))


def build_model(name_or_spec: str | ModelSpec, num_classes: int | None = None) -> YOLO:
    """Build a member by name (yolov4-tiny, -csp, -p5, -p6, -p7) or from a `ModelSpec`.

    `num_classes` defaults to the spec's own count (80 for the named members).
    """
    if isinstance(name_or_spec, ModelSpec):
        spec = name_or_spec if num_classes in (None, name_or_spec.num_classes) else name_or_spec.replace(
            num_classes=num_classes)
    else:
        spec = get_spec(name_or_spec, num_classes)
    return YOLO(spec)
