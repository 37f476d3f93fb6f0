"""`load_model`: the one entry point that reads weights, whatever their format; `resolve_model`: the one
rule for what a "model" argument means (a member name, a spec YAML or a weights file).

Every command that reads a weights file goes through here, so each format is read the safe way:
our checkpoints with `torch.load(weights_only=True)`, official Scaled-YOLOv4 `.pt` files and any other
pickle through the restricted unpickler, darknet `.cfg`/`.weights` as plain text and floats.
Each model comes back with the input geometry its weights were made for (`model.geometry`).

A member name instead of a file builds the member with random weights, and says so on stderr: a
user who expects the released COCO weights would otherwise get garbage without a word.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from scaledyolo.classes import default_names
from scaledyolo.errors import UserError
from scaledyolo.geometry import DARKNET_GEOMETRY, OFFICIAL_GEOMETRY
from scaledyolo.interop.checkpoint import is_our_checkpoint, model_from_checkpoint, read_checkpoint
from scaledyolo.interop.darknet import model_from_cfg  # also registers arch "darknet" for checkpoints of cfgs
from scaledyolo.interop.official import load_official
from scaledyolo.interop.unpickler import torch_file_kind
from scaledyolo.models.spec import MEMBERS, resolve_spec
from scaledyolo.models.yolo import YOLO, build_model

LOGGER = logging.getLogger("scaledyolo")


def random_weights_notice(name: str) -> str:
    """The one line said whenever a member name stands where weights were expected."""
    return (f"'{name}' is a model name, not a weights file: its weights are RANDOM (detections mean nothing). "
            f"Released weights: `scaledyolo weights` lists them and where they are published; darknet files "
            f"convert with `scaledyolo convert NAME.cfg NAME.weights -o NAME.pt`, official .pt files load as they are")


def _names_beside(cfg: Path, num_classes: int) -> list[str]:
    names_file = cfg.with_suffix(".names")
    if not names_file.is_file():
        return default_names(num_classes)
    names = [line.strip() for line in names_file.read_text(encoding="utf-8", errors="replace").splitlines()
             if line.strip()]
    if len(names) != num_classes:
        raise UserError(f"has {len(names)} names but {cfg.name} has {num_classes} classes", names_file)
    return names


def _load_darknet(cfg: Path, weights: str | Path | None) -> YOLO:
    if weights is None and cfg.with_suffix(".weights").is_file():
        weights = cfg.with_suffix(".weights")
    model = model_from_cfg(cfg, weights)
    model.names = _names_beside(cfg, model.num_classes)
    model.geometry = DARKNET_GEOMETRY
    return model


def _looks_like_torch(path: Path) -> bool:
    """A torch zip archive (even a damaged one) or a pickle stream."""
    with open(path, "rb") as f:
        return torch_file_kind(f.read(2)) is not None


def _load_file(path: Path, weights: str | Path | None) -> YOLO:
    suffix = path.suffix.lower()
    if suffix == ".cfg":
        return _load_darknet(path, weights)
    if suffix == ".weights":
        raise UserError("darknet .weights need their .cfg: pass the .cfg (weights with the same stem beside it are "
                        "found), or the cfg with weights=", path)
    if weights is not None:
        raise UserError("weights= goes with a darknet .cfg only", path)
    if is_our_checkpoint(path):
        return model_from_checkpoint(read_checkpoint(path), path=path)
    if _looks_like_torch(path):
        model = load_official(path)
        model.names = default_names(model.num_classes)
        model.geometry = OFFICIAL_GEOMETRY
        return model
    raise UserError("not a model file: expected a scaledyolo checkpoint, an official Scaled-YOLOv4 .pt or a "
                    "darknet .cfg (with its .weights)", path)


def load_model(path: str | Path, weights: str | Path | None = None, device: str | torch.device = "cpu",
               num_classes: int | None = None) -> YOLO:
    """An eval-mode model (with `.names` and `.predict`) from any weights the project knows.

    `path`: our checkpoint, a darknet `.cfg` (its `.weights` beside it with the same stem, or
    `weights=`; class names from a `.names` file beside it), an official Scaled-YOLOv4 `.pt`, or a
    member name (random weights, said on stderr). `num_classes`, when given, must match the weights'
    class count. Our checkpoints also bring their training size (`spec.img_size`), data YAML
    (`.data_yaml`) and input geometry (`.geometry`), which predict, val, bench and export default to.
    """
    p = Path(path)
    if p.is_file():
        model = _load_file(p, weights)
    elif str(path).lower() in MEMBERS and not p.exists():
        LOGGER.warning(random_weights_notice(str(path)))
        model = build_model(str(path).lower(), num_classes=num_classes or 80)
        model.names = default_names(model.num_classes)
    elif p.is_dir():
        raise UserError("is a folder, expected a weights file", p)
    else:
        raise UserError(f"weights file not found (or a member name: {', '.join(MEMBERS)})", p)
    if num_classes is not None and model.num_classes != num_classes:
        raise UserError(f"the weights are for {model.num_classes} classes, not {num_classes}; to fine-tune them on "
                        f"{num_classes} classes run `scaledyolo train --weights {path}` (output layers start fresh)", p)
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise UserError(f"cannot use device {device!r}: {str(exc).splitlines()[0][:200]}") from None
    return model.eval()


def resolve_model(source: str | Path | YOLO, num_classes: int | None = None, device: str | torch.device = "cpu"
                  ) -> YOLO:
    """What every model argument means (`info MODEL`, `bench --model/--weights`, `Detector(...)`): a member
    name or a spec YAML builds that architecture with random weights (what measuring a model needs, so
    nothing is said), anything else is a weights file `load_model` reads; a YOLO is taken as it is.

    Returns an eval-mode model on `device`; `num_classes` builds a name or spec for that many classes
    (and must match a weights file's count)."""
    if isinstance(source, YOLO):
        return source.to(device).eval()
    spec = resolve_spec(source)
    if spec is None:
        return load_model(source, device=device, num_classes=num_classes)
    model = build_model(spec, num_classes=num_classes)
    if str(source).lower() in MEMBERS:  # a member is COCO's architecture: its names, as load_model gives them
        model.names = default_names(model.num_classes)
    return model.to(device).eval()
