"""Checkpoints saved by scaledyolo 0.1.0, before the model rebuild into named blocks: their state_dict
keys are `layers.N.*` (N the position in one flat list of layers) and, for the large members,
`detect.m.J.*`. The rebuilt model names the same tensors `backbone.*`, `neck.*`, `head.*`.

The flat list was, layer for layer, the darknet cfg for the darknet-born members (tiny, csp, and
models built from a cfg) and the official yaml for the large ones (P5/P6/P7, yaml csp), so the
tables that already map those files onto our modules (`darknet.layout.darknet_layout`,
`official.official_layout`) map the old keys too: `layers.N.rest` -> `TABLE[N].module.rest`.
"""

from __future__ import annotations

import logging
import re

import torch
import torch.nn as nn

from scaledyolo.interop.darknet.layout import darknet_layout
from scaledyolo.interop.official import official_layout
from scaledyolo.models.spec import ModelSpec
from scaledyolo.models.yolo import meta_model

LOGGER = logging.getLogger("scaledyolo")
OLD_KEY = re.compile(r"layers\.(\d+)\.(.+)")


def is_legacy_state(state: object) -> bool:
    """True for a 0.1.0 state_dict: its tensors are under `layers.N.` at the top."""
    return isinstance(state, dict) and any(isinstance(k, str) and OLD_KEY.fullmatch(k) for k in state)


def legacy_table(spec: ModelSpec) -> dict[str, str]:
    """Old key prefix -> new module path, for every old layer that holds tensors; plus the Detect outputs."""
    if spec.arch == "large":
        layers, _heads = official_layout(spec)
        table = {f"layers.{i}": layer.path for i, layer in enumerate(layers) if layer.path}
        table.update({f"detect.m.{j}": f"head.outputs.{j}" for j in range(len(_heads))})
        return table
    model = meta_model(spec)
    modules = dict(model.named_modules())
    table = {}
    for i, layer in enumerate(darknet_layout(model)):
        if layer.module:  # 0.1.0 wrapped the bias-only output convs in Conv too: `layers.N.conv.weight`
            bare = isinstance(modules.get(layer.module), nn.Conv2d)
            table[f"layers.{i}.conv" if bare else f"layers.{i}"] = layer.module
    return table


def _rename(state: dict[str, torch.Tensor], table: dict[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in state.items():
        head, _, rest = key.rpartition(".")
        while head and head not in table:  # the longest known prefix: `detect.m.0` before `detect`
            head, _, more = head.rpartition(".")
            rest = f"{more}.{rest}"
        out[f"{table[head]}.{rest}" if head else key] = tensor
    return out


def convert_legacy_state(state: dict[str, torch.Tensor], spec: ModelSpec) -> dict[str, torch.Tensor]:
    """A 0.1.0 state_dict with the rebuilt model's keys (tensors unchanged; unknown keys kept, so a
    mismatch is still reported by the caller)."""
    return _rename(state, legacy_table(spec))


def to_legacy_state(state: dict[str, torch.Tensor], spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The inverse: a rebuilt model's state_dict under 0.1.0's keys (for tests and for going back)."""
    return _rename(state, {new: old for old, new in legacy_table(spec).items()})
