"""Assembly of a member: backbone, neck and head from its generator, the `Detect` decoding, BN
folding and once-for-all subnets.

Train-mode forward returns raw maps, one per level, `(B, anchors, H, W, 5 + nc)` before activation.
Eval-mode forward returns one tensor `(B, N, 5 + nc)`: cx, cy, w, h in input pixels, objectness and
per-class probabilities, levels by increasing stride, each flattened in (anchor, y, x) order.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from scaledyolo.errors import UserError
from scaledyolo.models.architectures import build_network
from scaledyolo.models.decode import decode_boxes
from scaledyolo.models.fusion import fold_batchnorms
from scaledyolo.models.layers import set_batchnorm
from scaledyolo.models.spec import ModelSpec, get_spec


class Detect(nn.Module):
    """Reshapes the head's raw maps per level and decodes them into boxes (`scaledyolo.models.decode`).

    It holds the anchors (pixels, a buffer: they travel with the weights) and no parameters.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.nc = spec.num_classes
        self.no = spec.num_classes + 5
        self.na = spec.num_anchors
        self.decode_rule = spec.decode
        self.scale_xy = [spec.level_scale_xy(level) for level in range(spec.num_levels)]
        self.strides = list(spec.strides)
        self.register_buffer("anchors", torch.tensor(spec.anchors, dtype=torch.float32).view(len(spec.anchors), -1, 2))
        self._grids: dict[tuple[int, int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def raw(self, maps: list[torch.Tensor], levels: Sequence[int]) -> list[torch.Tensor]:
        """Output-convolution maps `(B, A * (5 + nc), H, W)` -> `(B, A, H, W, 5 + nc)` per level."""
        out = []
        for x in maps:
            b, _, h, w = x.shape
            out.append(x.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return out

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
            y = x.sigmoid()
            xy, wh = decode_boxes(x, anchor, self.decode_rule, self.scale_xy[level], sig=y)
            out.append(torch.cat(((xy + grid) * self.strides[level], wh, y[..., 4:]), -1).view(b, -1, self.no))
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
    """A Scaled-YOLOv4 member built from a `ModelSpec`: `backbone` -> `neck` -> `head` -> `detect`."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        spec.validate()
        check_model_size(spec)
        self.spec = spec
        network = build_network(spec)
        self.backbone, self.neck, self.head = network.backbone, network.neck, network.head
        self.detect = Detect(spec)
        self.levels = list(range(spec.num_levels))
        self.names: list[str] = [str(i) for i in range(spec.num_classes)]
        set_batchnorm(self, spec.bn_eps, spec.bn_momentum)
        self._initialize_biases(network.outputs)

    @property
    def strides(self) -> list[int]:
        return [self.spec.strides[i] for i in self.levels]

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def stage_paths(self) -> list[str]:
        """Module paths in forward order: the backbone's stages (a darknet graph's layers), then neck and head.

        The units `--freeze K` counts (the first K are frozen for transfer learning).
        """
        backbone = self.backbone
        layers = getattr(backbone, "layers", None)
        names = [f"layers.{i}" for i in range(len(layers))] if isinstance(layers, nn.ModuleList) else [
            name for name, _ in backbone.named_children()]
        return [f"backbone.{name}" for name in names] + ["neck", "head"]

    def _initialize_biases(self, convs: list[nn.Conv2d]) -> None:
        """Objectness and class priors in the output biases (8 objects per 640 image; p(class) 0.6/nc)."""
        for conv, stride in zip(convs, self.spec.strides):
            bias = conv.bias.detach().view(self.detect.na, -1)
            bias[:, 4] += math.log(8 / (640 / stride) ** 2)
            bias[:, 5:] += math.log(0.6 / (self.num_classes - 0.99))
            conv.bias.data.copy_(bias.view(-1))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output convolutions' maps `(B, A * (5 + nc), H, W)` of the kept detection levels."""
        return self.head(self.neck(self.backbone(x), self.levels), self.levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        maps = self.detect.raw(self.features(x), self.levels)
        if self.training:
            return maps
        return self.detect.decode(maps, self.levels)

    def fuse(self) -> "YOLO":
        """Fold the batch norms into the convolutions (inference only, `scaledyolo.models.fusion`); returns self."""
        fold_batchnorms(self)
        return self

    def subnet(self, levels: Sequence[int] | str) -> "YOLO":
        """A copy that computes only the given detection levels (indices or 'p7-p7-p6'-style names).

        The once-for-all subnets of the paper: the modules that only the dropped levels need are
        removed (found by running the copy once and seeing which modules it calls), so the output
        equals the full model's output restricted to the kept levels.
        """
        keep = parse_levels(levels, self.spec) if isinstance(levels, str) else sorted(set(int(i) for i in levels))
        if not keep or any(i < 0 or i >= self.spec.num_levels for i in keep):
            raise ValueError(f"levels must be within 0..{self.spec.num_levels - 1}, got {keep}")
        sub = copy.deepcopy(self)
        sub.levels = keep
        _remove_uncalled(sub)
        return sub

    # Pictures in (paths, arrays, PIL images) are the prediction floor's business, above this one: the
    # package root (`scaledyolo.load`, `scaledyolo.build_model`, `Detector`) attaches its `predict` here,
    # so `model("bus.jpg")` and `model.predict(...)` work without models/ importing predict/, and a path
    # never reaches `forward`.
    predictor: Callable[..., list] | None = None

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Tensors run `forward` (nn.Module's call: hooks, training and eval formats); anything else is
        pictures to detect on (`predict`)."""
        if isinstance(x, torch.Tensor):
            return super().__call__(x, *args, **kwargs)
        return self.predict(x, *args, **kwargs)

    def predict(self, images: Any, **kwargs: Any) -> list:
        """Detect objects in paths, HxWx3 RGB arrays or PIL images: `scaledyolo.predict.predict(self, images,
        **kwargs)`, once a predictor is attached (models from `scaledyolo.load` / `build_model` have one)."""
        if self.predictor is None:
            raise TypeError(f"this YOLO takes image tensors (B, 3, H, W), got {type(images).__name__}: to detect on "
                            "pictures, get the model from scaledyolo.load(...) or scaledyolo.build_model(...), or "
                            "call scaledyolo.predict.predict(model, pictures)")
        return self.predictor(self, images, **kwargs)


def parse_levels(text: str, spec: ModelSpec) -> list[int]:
    """'p7-p7-p6' (the paper's notation: model, then kept output levels) -> level indices."""
    parts = [p.strip().lower() for p in text.split("-") if p.strip()]
    names = {f"p{s.bit_length() - 1}": i for i, s in enumerate(spec.strides)}
    if len(parts) > 1 and parts[0].startswith("p"):  # the first part names the model
        parts = parts[1:]
    try:
        return sorted({names[p] for p in parts})
    except KeyError as exc:
        raise UserError(f"unknown level {exc.args[0]!r} in {text!r}; this model has {', '.join(names)}") from None


def _remove_uncalled(model: YOLO) -> None:
    """Replace every module with parameters that a forward pass of `model` does not call by nn.Identity."""
    called: set[int] = set()
    hooks = [m.register_forward_pre_hook(lambda mod, inp: called.add(id(mod))) for m in model.modules()]
    reference = next(model.parameters())
    size = 2 * model.spec.max_stride
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size, device=reference.device, dtype=reference.dtype))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    used = {""}
    for name, module in model.named_modules():
        if id(module) in called:  # a container is used when anything inside it is called
            parts = name.split(".")
            used.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    removed: list[str] = []
    for name, module in list(model.named_modules()):
        if name in used or any(name.startswith(prefix + ".") for prefix in removed):
            continue
        if next(module.parameters(), None) is not None:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, nn.Identity())
            removed.append(name)


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
