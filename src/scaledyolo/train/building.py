"""The model a run trains: from a member name, a spec YAML or a weights file, with layers frozen and the
labels checked against the class count (`--single-cls` folds every class into one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from scaledyolo.errors import UserError
from scaledyolo.interop.loading import load_model
from scaledyolo.models.spec import MEMBERS, resolve_spec
from scaledyolo.models.yolo import YOLO, build_model

SINGLE_CLASS_NAMES = ["item"]  # the official --single-cls name


def load_weights_model(path: str | Path) -> YOLO:
    """Any weights file we read (ours, darknet cfg+weights, official .pt), through the interop loader."""
    return load_model(str(path))


def transfer_weights(src: nn.Module, dst: nn.Module) -> tuple[int, int]:
    """Copy every tensor whose name and shape match (finetuning to another class count); (copied, total)."""
    dst_state = dst.state_dict()
    matched = {k: v for k, v in src.state_dict().items() if k in dst_state and v.shape == dst_state[k].shape}
    dst.load_state_dict(matched, strict=False)
    return len(matched), len(dst_state)


def build_train_model(source: str | None, nc: int, weights: str | None) -> tuple[YOLO, str]:
    """The model to train for `nc` classes, from a member name, a spec YAML or a weights file.

    `source=None` takes the architecture of `weights` (`train --weights tiny.pt`, as ultralytics
    does), so finetuning never needs the member name repeated; without weights it is yolov4-tiny.
    Returns the model and a note saying what was transferred ("" when nothing was).
    """
    note = ""
    if source is None:
        if not weights:
            source = "yolov4-tiny"
        else:
            source, weights = weights, None
    path = Path(source)
    spec = resolve_spec(source)
    if spec is not None:
        model = build_model(spec, num_classes=nc)
    elif path.exists():
        pretrained = load_weights_model(path)
        model = build_model(pretrained.spec, num_classes=nc)
        n, total = transfer_weights(pretrained, model)
        note = f"transferred {n}/{total} tensors from {path}"
    else:
        raise UserError(f"not a model name ({', '.join(MEMBERS)}), spec YAML nor an existing weights file", path)
    if weights:
        n, total = transfer_weights(load_weights_model(weights), model)
        if n == 0:
            raise UserError(f"no layer of these weights fits {model.spec.name} (names and shapes differ)", weights)
        note = f"transferred {n}/{total} tensors from {weights}"
    return model, note


def starts_from_weights(args: dict[str, Any]) -> bool:
    """Whether training starts from weights (`--weights`, or `--model` naming a weights file)."""
    source = args["model"]
    return bool(args["weights"]) or (source is not None and source.lower() not in MEMBERS
                                     and Path(source).suffix not in (".yaml", ".yml"))


def freeze_layers(model: YOLO, k: int) -> int:
    """Freeze the first k stages of the model (`YOLO.stage_paths`; transfer learning); returns how many
    tensors were frozen."""
    if k <= 0:
        return 0
    prefixes = tuple(f"{path}." for path in model.stage_paths()[:k])
    frozen = 0
    for name, p in model.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)
            frozen += 1
    return frozen


def check_labels(dataset: Any, nc: int, data: str) -> None:
    """The training split must hold objects, each of a class the data YAML names."""
    labels = [lb for lb in dataset.labels if len(lb)]
    if not labels:
        raise UserError("the training split has no labelled objects", data)
    top = int(max(lb[:, 0].max() for lb in labels))
    if top >= nc:
        raise UserError(f"a label uses class {top} but the data YAML names only {nc} classes", data)


def fold_to_one_class(dataset: Any) -> None:
    """`--single-cls`: every object of `dataset` becomes class 0 (copies: the data config's arrays stay)."""
    folded = []
    for lb in dataset.labels:
        lb = np.array(lb, copy=True)
        if len(lb):
            lb[:, 0] = 0
        folded.append(lb)
    dataset.labels = folded
