"""`ModelSpec`: the compound-scaling knobs of a member, as plain data, and the five named members.

The paper scales a detector by input size and number of stages together first, then depth, then
width. A spec holds exactly those knobs (plus activation and anchors); `ModelSpec.scale` applies them
in that order, so YOLOv4-P6 and P7 are P5 scaled (see `tests/test_models.py`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from scaledyolo.errors import UserError
from scaledyolo.logs import LOGGER
from scaledyolo.models.layers import ACTIVATIONS
from scaledyolo.safe_yaml import read_yaml_mapping

ARCHS = ("tiny", "csp", "large", "darknet")
DECODES = ("darknet", "scaled")
FIRST_STAGES = (None, "residual")
# Sane ranges for a spec read from a file (see SECURITY.md): the largest member, P7, has 7 stages, width 1.25,
# depths up to 15, 1536-pixel inputs and 4 anchors per level; the model's parameter count is bounded separately.
MAX_IMG_SIZE = 4096
MAX_STAGES = 7
MAX_DEPTH = 64
MAX_WIDTH = 4.0
MAX_ANCHORS_PER_LEVEL = 16
MAX_ANCHOR = 100_000.0  # pixels
MAX_CLASSES = 10_000
MAX_CFG_CHARS = 1 << 20

# The paper's per-stage depths of the CSP backbone for the large members (stages 1..7).
LARGE_STAGE_DEPTHS = [1, 3, 15, 15, 7, 7, 7]

COCO80_ANCHORS = {
    "yolov4-tiny": [[23, 27, 37, 58, 81, 82], [81, 82, 135, 169, 344, 319]],
    "yolov4-csp": [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]],
    "yolov4-p5": [[13, 17, 31, 25, 24, 51, 61, 45], [48, 102, 119, 96, 97, 189, 217, 184],
                  [171, 384, 324, 451, 616, 618, 800, 800]],
    "yolov4-p6": [[13, 17, 31, 25, 24, 51, 61, 45], [61, 45, 48, 102, 119, 96, 97, 189],
                  [97, 189, 217, 184, 171, 384, 324, 451], [324, 451, 545, 357, 616, 618, 1024, 1024]],
    "yolov4-p7": [[13, 17, 22, 25, 27, 66, 55, 41], [57, 88, 112, 69, 69, 177, 136, 138],
                  [136, 138, 287, 114, 134, 275, 268, 248], [268, 248, 232, 504, 445, 416, 640, 640],
                  [812, 393, 477, 808, 1070, 908, 1408, 1408]],
}

# BatchNorm (eps, momentum) each architecture implies. The large members and the yaml CSP were born
# in the official PyTorch code, whose initialize_weights sets every BatchNorm2d to eps 1e-3 and
# momentum 0.03. The darknet-born members normalise as darknet does, (x - mean) / sqrt(var + 1e-5)
# (darknet's normalize_cpu), which is PyTorch's BatchNorm2d with eps 1e-5; they train with
# PyTorch's momentum 0.1 (darknet's own rolling average keeps 0.99 of the old value, momentum 0.01).
OFFICIAL_PYTORCH_BATCHNORM = (1e-3, 0.03)
DARKNET_BATCHNORM = (1e-5, 0.1)
ARCH_BATCHNORM = {"large": OFFICIAL_PYTORCH_BATCHNORM}


@dataclass
class ModelSpec:
    """Everything needed to build a member; serialisable with `to_dict` / `from_dict`.

    arch: 'tiny' (CSPOSANet), 'csp' (CSPDarknet53s + CSP-PAN) or 'large' (fully CSP, P5-P7).
    stages: stride-2 stages of the backbone; the detection levels run from stride 8 (16 for tiny)
    to 2**stages. depths: residual units per backbone stage. neck_depth: units per neck CSP block.
    anchors: per level (increasing stride), flat [w0, h0, w1, h1, ...] in input pixels.
    decode: 'darknet' (sigmoid * scale_xy offsets, exp sizes) or 'scaled' (2 sigma - 0.5, (2 sigma)^2).
    bn_eps, bn_momentum: every BatchNorm's eps and momentum (PyTorch's meaning); left out (None, or a
    spec saved before they existed) they take the values the architecture implies (`ARCH_BATCHNORM`).
    first_stage: None (the architecture's own) or, for arch 'large' only, 'residual': a first stage of
    one plain residual unit instead of a BottleneckCSP, i.e. the official yolov4-csp.yaml, the PyTorch
    form of yolov4-csp that `scaledyolo.load` reads from official .pt files (the built-in `yolov4-csp`
    is the darknet cfg's form, arch 'csp').
    """

    name: str
    arch: str
    img_size: int
    stages: int
    depths: list[int]
    width: float
    activation: str
    anchors: list[list[float]]
    neck_depth: int = 3
    num_classes: int = 80
    decode: str = "scaled"
    scale_xy: float | list[float] = 2.0  # per level when a darknet cfg gives each [yolo] its own
    extra: dict[str, Any] = field(default_factory=dict)
    bn_eps: float | None = None
    bn_momentum: float | None = None
    first_stage: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.extra, dict) and self.extra.get("first_stage") == "bottleneck":  # saved before the field
            self.extra = {k: v for k, v in self.extra.items() if k != "first_stage"}
            self.first_stage = "residual"
        if self.arch not in ARCHS:
            raise _bad("arch", self.arch, f"is not an architecture ({', '.join(ARCHS)})")
        eps, momentum = ARCH_BATCHNORM.get(self.arch, DARKNET_BATCHNORM)
        self.bn_eps = eps if self.bn_eps is None else self.bn_eps
        self.bn_momentum = momentum if self.bn_momentum is None else self.bn_momentum
        if not (type(self.bn_eps) in (int, float) and 0 < self.bn_eps < 1
                and type(self.bn_momentum) in (int, float) and 0 <= self.bn_momentum <= 1):
            raise UserError(f"bn_eps must be in (0, 1) and bn_momentum in [0, 1], got {self.bn_eps!r}, "
                            f"{self.bn_momentum!r}")
        self.bn_eps, self.bn_momentum = float(self.bn_eps), float(self.bn_momentum)
        self.validate()

    @property
    def num_levels(self) -> int:
        return len(self.anchors)

    @property
    def num_anchors(self) -> int:
        return len(self.anchors[0]) // 2

    @property
    def strides(self) -> list[int]:
        top = 2 ** self.stages
        return [top // 2 ** i for i in range(self.num_levels)][::-1]

    @property
    def max_stride(self) -> int:
        return max(self.strides)

    def level_scale_xy(self, level: int) -> float:
        """The darknet `scale_x_y` of one level (`scale_xy` is one value or one per level)."""
        return float(self.scale_xy[level] if isinstance(self.scale_xy, (list, tuple)) else self.scale_xy)

    def validate(self) -> None:
        """Check every field's type and range (UserError naming the field): a spec read from a file decides
        how much memory the model takes, so nothing is built from values outside these ranges."""
        _check_spec(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelSpec":
        if not isinstance(data, dict):
            raise UserError(f"a model spec must be a mapping of its fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown model spec keys: {', '.join(sorted(map(str, unknown)))}")
        missing = [f.name for f in fields(cls)
                   if f.default is MISSING and f.default_factory is MISSING and f.name not in data]
        if missing:
            raise UserError(f"the model spec lacks {', '.join(missing)}")
        return cls(**copy.deepcopy(data))

    def replace(self, **changes: Any) -> "ModelSpec":
        data = self.to_dict()
        data.update(changes)
        return ModelSpec.from_dict(data)

    def scale(self, img_size: int | None = None, stages: int | None = None, depth: float = 1.0,
              width: float = 1.0, anchors: list[list[float]] | None = None, name: str | None = None) -> "ModelSpec":
        """A new member by compound scaling: input size and stages first, then depth, then width.

        `depth` and `width` multiply the current per-stage depths and width; new stages take the
        paper's depths (1, 3, 15, 15, 7, 7, 7). Anchors default to those of the named member with the
        same number of levels (else the current ones are kept when the level count is unchanged).
        """
        stages = self.stages if stages is None else stages
        if self.arch != "large" and stages != self.stages:
            raise UserError(f"{self.name}: only the large architecture scales its number of stages")
        if not 3 <= stages <= len(LARGE_STAGE_DEPTHS):
            raise UserError(f"stages must be between 3 and {len(LARGE_STAGE_DEPTHS)}, got {stages}")
        base = self.depths[:stages] + LARGE_STAGE_DEPTHS[len(self.depths):stages]
        depths = [max(round(d * depth), 1) if d > 1 else d for d in base]
        levels = stages - 2
        if anchors is None:
            anchors = self.anchors if levels == self.num_levels else _default_anchors(levels)
        return self.replace(
            name=name or f"{self.name}-scaled",
            img_size=img_size or self.img_size,
            stages=stages,
            depths=depths,
            neck_depth=max(round(self.neck_depth * depth), 1) if self.neck_depth > 1 else self.neck_depth,
            width=round(self.width * width, 4),
            anchors=[list(a) for a in anchors],
        )


def _bad(name: str, value: Any, why: str) -> UserError:
    text = repr(value)
    return UserError(f"model spec: {name}={text[:60] + '...' if len(text) > 60 else text} {why}")


def _int_in(name: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(name, value, f"must be an integer from {low} to {high}")
    return value


def _number_in(name: str, value: Any, low: float, high: float) -> float:
    """A finite number with low < value <= high."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not (
            low < value <= high):
        raise _bad(name, value, f"must be a number above {low:g} and at most {high:g}")
    return float(value)


def _check_spec(spec: ModelSpec) -> None:
    if not isinstance(spec.name, str) or not 0 < len(spec.name) <= 200:
        raise _bad("name", spec.name, "must be a non-empty string of at most 200 characters")
    if spec.arch not in ARCHS:
        raise _bad("arch", spec.arch, f"is not an architecture ({', '.join(ARCHS)})")
    if spec.activation not in ACTIVATIONS:
        raise _bad("activation", spec.activation, f"is not an activation ({', '.join(ACTIVATIONS)})")
    if spec.decode not in DECODES:
        raise _bad("decode", spec.decode, f"is not a decoding rule ({', '.join(DECODES)})")
    if spec.first_stage not in FIRST_STAGES or (spec.first_stage is not None and spec.arch != "large"):
        raise _bad("first_stage", spec.first_stage, "must be null, or 'residual' for arch large (the official "
                                                     "yolov4-csp.yaml)")
    _int_in("img_size", spec.img_size, 32, MAX_IMG_SIZE)
    _int_in("stages", spec.stages, 3 if spec.arch in ("csp", "large") else 1, MAX_STAGES)
    _int_in("neck_depth", spec.neck_depth, 0, MAX_DEPTH)
    _int_in("num_classes", spec.num_classes, 1, MAX_CLASSES)
    _number_in("width", spec.width, 0.0, MAX_WIDTH)
    if not isinstance(spec.depths, list) or len(spec.depths) > MAX_STAGES:
        raise _bad("depths", spec.depths, f"must be a list of at most {MAX_STAGES} integers")
    for depth in spec.depths:
        _int_in("depths", depth, 1, MAX_DEPTH)
    if spec.arch in ("csp", "large") and len(spec.depths) != spec.stages:
        raise _bad("depths", spec.depths, f"must give one depth per stage ({spec.stages})")
    anchors = spec.anchors
    if not isinstance(anchors, list) or not 1 <= len(anchors) <= spec.stages + 1 or any(
            not isinstance(level, list) or len(level) != len(anchors[0]) for level in anchors):
        raise _bad("anchors", anchors, f"must be 1 to {spec.stages + 1} lists of equal length (one per level)")
    if not 2 <= len(anchors[0]) <= 2 * MAX_ANCHORS_PER_LEVEL or len(anchors[0]) % 2:
        raise _bad("anchors", anchors[0], f"must be 1 to {MAX_ANCHORS_PER_LEVEL} width,height pairs per level")
    for level in anchors:
        for value in level:
            _number_in("anchors", value, 0.0, MAX_ANCHOR)
    expected_levels = {"tiny": 2, "csp": spec.stages - 2, "large": spec.stages - 2}.get(spec.arch)
    if spec.arch == "tiny" and spec.stages != 5:
        raise _bad("stages", spec.stages, "must be 5 for the tiny architecture")
    if expected_levels is not None and len(anchors) != expected_levels:
        raise _bad("anchors", anchors, f"must have {expected_levels} levels for arch {spec.arch} with "
                                       f"{spec.stages} stages")
    scales = list(spec.scale_xy) if isinstance(spec.scale_xy, (list, tuple)) else [spec.scale_xy]
    if isinstance(spec.scale_xy, (list, tuple)) and len(scales) != len(anchors):
        raise _bad("scale_xy", spec.scale_xy, f"must be one number or one per level ({len(anchors)})")
    for scale in scales:
        _number_in("scale_xy", scale, 0.0, 4.0)
    if not isinstance(spec.extra, dict) or any(not isinstance(k, str) for k in spec.extra):
        raise _bad("extra", spec.extra, "must be a mapping with string keys")
    cfg = spec.extra.get("cfg")
    if cfg is not None and (not isinstance(cfg, str) or len(cfg) > MAX_CFG_CHARS):
        raise _bad("extra.cfg", type(cfg).__name__, f"must be darknet cfg text of at most {MAX_CFG_CHARS} characters")


def _default_anchors(levels: int) -> list[list[float]]:
    for spec in MEMBERS.values():
        if spec.arch == "large" and spec.num_levels == levels:
            return spec.anchors
    raise UserError(f"no default anchors for {levels} levels; pass anchors=")


MEMBERS: dict[str, ModelSpec] = {
    "yolov4-tiny": ModelSpec("yolov4-tiny", "tiny", 416, 5, [], 1.0, "leaky", COCO80_ANCHORS["yolov4-tiny"],
                             neck_depth=0, decode="darknet", scale_xy=1.05),
    "yolov4-csp": ModelSpec("yolov4-csp", "csp", 640, 5, [1, 2, 8, 8, 4], 1.0, "mish", COCO80_ANCHORS["yolov4-csp"],
                            neck_depth=2),
    "yolov4-p5": ModelSpec("yolov4-p5", "large", 896, 5, LARGE_STAGE_DEPTHS[:5], 1.0, "mish",
                           COCO80_ANCHORS["yolov4-p5"]),
}
DEFAULT_MEMBER = "yolov4-csp"  # what `train` (CLI and Python) and `data`'s anchor fit use when no model is named
MEMBERS["yolov4-p6"] = MEMBERS["yolov4-p5"].scale(img_size=1280, stages=6, name="yolov4-p6",
                                                   anchors=COCO80_ANCHORS["yolov4-p6"])
MEMBERS["yolov4-p7"] = MEMBERS["yolov4-p6"].scale(img_size=1536, stages=7, width=1.25, name="yolov4-p7",
                                                   anchors=COCO80_ANCHORS["yolov4-p7"])


def load_spec(path: str | Path) -> ModelSpec:
    """A `ModelSpec` from a YAML mapping of its fields (`--model my.yaml`); every problem names the file."""
    path = Path(path)
    data = read_yaml_mapping(path, "model spec file", "a model spec YAML must be a mapping of ModelSpec fields")
    try:
        return ModelSpec.from_dict(data)
    except UserError as exc:
        raise UserError(exc.message, path) from None


def resolve_spec(source: str | Path) -> ModelSpec | None:
    """The spec a member name or a spec YAML (.yaml/.yml) names; None for anything else (a weights file,
    which only `scaledyolo.interop.loading.resolve_model` reads). The first half of the one
    "member name, spec YAML or weights file" rule every command follows."""
    text = str(source)
    if text.lower() in MEMBERS:
        return get_spec(text)
    if Path(text).suffix.lower() in (".yaml", ".yml"):
        return load_spec(text)
    return None


def round_img_size(size: int, stride: int) -> int:
    """`size` rounded up to a multiple of the model's max stride, with a warning when it changes."""
    rounded = max(stride, -(-int(size) // stride) * stride)
    if rounded != size:
        LOGGER.warning("image size %s is not a multiple of the max stride %d; using %d", size, stride, rounded)
    return rounded


def get_spec(name: str, num_classes: int | None = None) -> ModelSpec:
    """The spec of a named member (a copy), optionally for another number of classes."""
    key = name.lower()
    if key not in MEMBERS:
        raise UserError(f"unknown model {name!r}; valid names: {', '.join(MEMBERS)}")
    spec = MEMBERS[key].replace()
    return spec if num_classes is None else spec.replace(num_classes=num_classes)
