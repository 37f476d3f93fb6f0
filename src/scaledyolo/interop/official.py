"""Official Scaled-YOLOv4 `.pt` files (yolov4-large branch: P5, P6, P7 and the yaml CSP) -> our model.

The official train.py pickles `{'epoch', 'best_fitness', 'training_results', 'model', 'optimizer'}`
with `model` a whole `models.yolo.Model` (often fp16 after strip_optimizer). The file is read with
the restricted unpickler only, so its classes arrive as inert stand-ins holding their state. The
official model is a numbered layer list (its yaml); ours is named blocks. `official_layout(spec)` is
the table between them, derived once from the spec the way the official yaml lays out the
backbone, SPPCSP and CSP-PAN: layer N -> our module path (and the layers N reads), so `model.N.*`
maps to `PATH.*` (inside a block the official attribute names are ours) and the Detect's `m.L.*` to
`head.outputs.L.*`; anchors come from `anchor_grid` (pixels).
BatchNorm eps and momentum come from the file's own BatchNorm layers into the spec, and every
tensor (running variances included) is taken as stored, so train mode sees the official model too.
The structure is checked (layer types, their inputs, every tensor's name and shape) before loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scaledyolo.errors import UserError
from scaledyolo.interop.unpickler import StandIn, restricted_load
from scaledyolo.models.spec import MAX_ANCHORS_PER_LEVEL, MAX_STAGES, MAX_WIDTH, MEMBERS, ModelSpec
from scaledyolo.models.yolo import YOLO, meta_model, state_mismatch

OFFICIAL_TYPES = {  # official class -> its short name in `official_layout`
    "models.common.Conv": "Conv", "models.common.Bottleneck": "Bottleneck",
    "models.common.BottleneckCSP": "BottleneckCSP", "models.common.BottleneckCSP2": "BottleneckCSP2",
    "models.common.SPPCSP": "SPPCSP", "models.common.Concat": "Concat",
    "torch.nn.modules.upsampling.Upsample": "Upsample",
}
NATIVE_SIZE = {5: 896, 6: 1280, 7: 1536}


@dataclass
class OfficialLayer:
    """Layer N of the official yaml: its class, our module holding its tensors (None: it has none), the layers it reads."""

    kind: str
    path: str | None
    sources: tuple[int, ...]


def official_layout(spec: ModelSpec) -> tuple[list[OfficialLayer], list[int]]:
    """The official yaml's layers for a large-arch spec, and the indices of the layers Detect reads."""
    layers: list[OfficialLayer] = []

    def add(kind: str, path: str | None, sources: tuple[int, ...] | None = None) -> int:
        layers.append(OfficialLayer(kind, path, (len(layers) - 1,) if sources is None else sources))
        return len(layers) - 1

    add("Conv", "backbone.stem")
    outputs = []
    for i in range(spec.stages):
        stage = f"backbone.stage{i + 1}"
        add("Conv", f"{stage}.down")
        residual = i == 0 and spec.first_stage == "residual"
        outputs.append(add("Bottleneck", f"{stage}.blocks.0") if residual else add("BottleneckCSP", f"{stage}.csp"))
    levels = spec.stages - 2
    top_down = [add("SPPCSP", "neck.spp")]
    for i in reversed(range(levels - 1)):
        add("Conv", f"neck.reduce.{i}")
        add("Upsample", None)
        add("Conv", f"neck.lateral.{i}", (outputs[i + 2],))
        add("Concat", None, (len(layers) - 1, len(layers) - 2))
        top_down.insert(0, add("BottleneckCSP2", f"neck.top_down.{i}"))
    heads = []
    for level in range(levels):
        if level:
            add("Conv", f"neck.down.{level - 1}", (len(layers) - 2,))
            add("Concat", None, (len(layers) - 1, top_down[level]))
            add("BottleneckCSP2", f"neck.bottom_up.{level - 1}")
        heads.append(add("Conv", f"head.convs.{level}"))
    return layers, heads


def _unknown(path: str | Path, why: str) -> UserError:
    return UserError(f"official file of unknown structure: {why}", path)


MAX_NESTING = 16  # module depth of the official tree is 5 (Model > Sequential > CSP > Sequential > Bottleneck > Conv)


def _modules(obj: Any) -> dict[str, Any]:
    modules = obj.state.get("_modules") if isinstance(obj, StandIn) else None
    return modules if isinstance(modules, dict) else {}


def _state_dict(obj: Any, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
    """nn.Module.state_dict() of a stand-in tree: parameters, persistent buffers, then children."""
    if not isinstance(obj, StandIn) or depth > MAX_NESTING:
        return {}
    out: dict[str, torch.Tensor] = {}
    skip = obj.state.get("_non_persistent_buffers_set")
    skip = skip if isinstance(skip, (set, frozenset)) else set()
    for group in ("_parameters", "_buffers"):
        tensors = obj.state.get(group)
        for name, tensor in (tensors.items() if isinstance(tensors, dict) else ()):
            if isinstance(tensor, torch.Tensor) and name not in skip:
                out[f"{prefix}{name}"] = tensor
    for name, child in _modules(obj).items():
        out.update(_state_dict(child, f"{prefix}{name}.", depth + 1))
    return out


def find_model(ckpt: Any, path: str | Path) -> StandIn:
    """The `models.yolo.Model` stand-in inside an official checkpoint (dict with 'model' / 'ema', or bare)."""
    candidates = [ckpt] if isinstance(ckpt, StandIn) else []
    if isinstance(ckpt, dict):
        candidates += [ckpt.get(k) for k in ("ema", "model") if isinstance(ckpt.get(k), StandIn)]
    for obj in candidates:
        if obj.qualname == "models.yolo.Model":
            return obj
    raise _unknown(path, "expected a dict whose 'model' entry is a models.yolo.Model")


def _sources(index: int, f: Any) -> tuple[int, ...] | None:
    """The absolute layer indices an official layer's `f` names (None when `f` is not an index or a list of them)."""
    fs = [f] if isinstance(f, int) else f
    if not isinstance(fs, (list, tuple)) or not 0 < len(fs) <= 16 or any(
            not isinstance(s, int) or isinstance(s, bool) for s in fs):
        return None
    return tuple(index - 1 if s == -1 else (index + s if s < 0 else s) for s in fs)


def _batchnorm_settings(model: StandIn, path: str | Path) -> tuple[float, float]:
    """The (eps, momentum) every BatchNorm2d of the file holds, as stored (the official code sets one
    value for all; a file whose BatchNorms disagree is not one it wrote)."""
    found: set[tuple[float, float]] = set()
    seen: set[int] = set()
    stack = [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:  # a pickle can make a module its own child
            continue
        seen.add(id(obj))
        if obj.qualname == "torch.nn.modules.batchnorm.BatchNorm2d":
            eps, momentum = obj.state.get("eps"), obj.state.get("momentum")
            if not (type(eps) is float and type(momentum) is float and 0 < eps < 1 and 0 <= momentum <= 1):
                raise _unknown(path, f"BatchNorm eps {eps!r:.30}, momentum {momentum!r:.30} "
                                     "(expected 0 < eps < 1, 0 <= momentum <= 1)")
            found.add((eps, momentum))
        children = _modules(obj)
        stack.extend(c for c in (children.values() if isinstance(children, dict) else ()) if isinstance(c, StandIn))
    if len(found) != 1:
        raise _unknown(path, f"its BatchNorm layers hold {len(found)} different (eps, momentum) settings, expected one")
    return found.pop()


def spec_from_official(model: StandIn, path: str | Path) -> tuple[ModelSpec, list[StandIn]]:
    """Our spec for an official Model stand-in, and its list of layers (the Detect last)."""
    seq = _modules(model).get("model")
    if not isinstance(seq, StandIn):
        raise _unknown(path, "the model has no layer list")
    keys = list(_modules(seq))
    if any(not isinstance(k, str) or not k.isdecimal() or len(k) > 6 for k in keys):
        raise _unknown(path, "its layer list has keys that are not layer numbers")
    layers = [_modules(seq)[k] for k in sorted(keys, key=int)]
    if not layers or any(not isinstance(m, StandIn) for m in layers) or layers[-1].qualname != "models.yolo.Detect":
        raise _unknown(path, "the last layer is not a models.yolo.Detect")
    detect = layers[-1]
    grid = (detect.state.get("_buffers") or {}).get("anchor_grid")
    nc = detect.state.get("nc")
    if not isinstance(grid, torch.Tensor) or grid.dim() != 6 or not isinstance(nc, int) or isinstance(nc, bool):
        raise _unknown(path, "the Detect layer has no anchor_grid or class count")
    levels, _, per_level, h, w, two = grid.shape
    if not (1 <= levels <= MAX_STAGES and 1 <= per_level <= MAX_ANCHORS_PER_LEVEL and h == w == 1 and two == 2):
        raise _unknown(path, f"the Detect anchor_grid has shape {tuple(grid.shape)}, expected (levels, 1, anchors, 1, 1, 2)")
    anchors = [[float(v) for v in level.reshape(-1).tolist()] for level in grid.float()]
    types = [m.qualname for m in layers[:-1]]
    if "models.common.SPPCSP" not in types:
        raise _unknown(path, "no SPPCSP layer (not a Scaled-YOLOv4 large/CSP model)")
    backbone = layers[:types.index("models.common.SPPCSP")]
    blocks = [m for m in backbone if m.qualname in ("models.common.BottleneckCSP", "models.common.Bottleneck")]
    depths = [len(_modules(_modules(b).get("m"))) if b.qualname.endswith("CSP") else 1 for b in blocks]
    csp2 = [m for m in layers if m.qualname == "models.common.BottleneckCSP2"]
    neck_depth = len(_modules(_modules(csp2[0]).get("m"))) if csp2 else 1
    yaml = model.state.get("yaml") if isinstance(model.state.get("yaml"), dict) else {}
    width = yaml.get("width_multiple")
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not 0 < width <= MAX_WIDTH:
        raise _unknown(path, f"the model's yaml has no width_multiple in (0, {MAX_WIDTH:g}] (found {width!r:.40})")
    first_stage = "residual" if blocks and blocks[0].qualname == "models.common.Bottleneck" else None
    stages = len(blocks)
    bn_eps, bn_momentum = _batchnorm_settings(model, path)
    name = _member_name(stages, depths, neck_depth, float(width), first_stage) or f"official-{Path(path).stem}"
    try:
        spec = ModelSpec(name=name, arch="large", img_size=640 if first_stage else NATIVE_SIZE.get(stages, 640),
                         stages=stages, depths=depths, width=float(width), activation="mish", anchors=anchors,
                         neck_depth=neck_depth, num_classes=nc, bn_eps=bn_eps, bn_momentum=bn_momentum,
                         first_stage=first_stage)
    except UserError as exc:
        raise _unknown(path, exc.message) from None
    return spec, layers


def _member_name(stages: int, depths: list[int], neck_depth: int, width: float, first_stage: str | None) -> str | None:
    if first_stage:
        return "yolov4-csp-yaml" if (depths, neck_depth, width) == ([1, 2, 8, 8, 4], 2, 1.0) else None
    for name, spec in MEMBERS.items():
        if spec.arch == "large" and (spec.stages, spec.depths, spec.neck_depth, spec.width) == (
                stages, depths, neck_depth, width):
            return name
    return None


def to_our_keys(tensors: dict[str, torch.Tensor], table: list[OfficialLayer],
                path: str | Path) -> dict[str, torch.Tensor]:
    """Official `N.rest` names (N a layer number, N = len(table) the Detect) -> our module paths, by the table."""
    state = {}
    for key, tensor in tensors.items():
        index, rest = key.split(".", 1)
        if int(index) == len(table):
            if rest in ("anchors", "anchor_grid"):
                continue
            if not rest.startswith("m."):
                raise _unknown(path, f"unexpected Detect tensor {rest!r:.60}")
            state[f"head.outputs.{rest[2:]}"] = tensor
        elif table[int(index)].path is None:
            raise _unknown(path, f"layer {index} ({table[int(index)].kind}) holds a tensor {rest!r:.60}")
        else:
            state[f"{table[int(index)].path}.{rest}"] = tensor
    return state


def model_from_official(ckpt: Any, path: str | Path) -> YOLO:
    """Build our model from an unpickled official checkpoint, checking the structure layer by layer."""
    official = find_model(ckpt, path)
    spec, layers = spec_from_official(official, path)
    try:
        model = meta_model(spec)  # the structure is checked without allocating the model
    except UserError as exc:
        raise _unknown(path, exc.message) from None
    except (ValueError, IndexError, KeyError) as exc:
        raise _unknown(path, f"cannot build a model for it ({exc})") from None
    table, heads = official_layout(spec)
    detect_index = len(layers) - 1
    if len(table) != detect_index:
        raise _unknown(path, f"{detect_index} layers before Detect, our {spec.name} has {len(table)}")
    for i, (layer, ours) in enumerate(zip(layers[:-1], table)):
        if OFFICIAL_TYPES.get(layer.qualname) != ours.kind:
            raise _unknown(path, f"layer {i} is {layer.qualname}, expected {ours.kind}")
        f = layer.state.get("f", -1)
        if _sources(i, f) != ours.sources:
            raise _unknown(path, f"layer {i} reads {f!r:.60}, expected layers {ours.sources}")
    if _sources(detect_index, layers[-1].state.get("f", [])) != tuple(heads):
        raise _unknown(path, f"Detect reads {layers[-1].state.get('f')!r:.60}, expected {heads}")
    state = to_our_keys(_state_dict(official.state["_modules"]["model"]), table, path)
    state["detect.anchors"] = torch.tensor(spec.anchors).view(model.detect.anchors.shape)
    problem = state_mismatch(model, state)  # before the real model exists: load_state_dict converts fp16 itself
    if problem:
        raise _unknown(path, problem)
    model = YOLO(spec)
    model.load_state_dict(state)
    return model.eval()


def load_official(path: str | Path) -> YOLO:
    """Read an official Scaled-YOLOv4 `.pt` through the restricted unpickler and return our eval model."""
    return model_from_official(restricted_load(path), path)
