"""Darknet `.weights` in and out: a header, then per convolution (in cfg order, `layout.conv_modules`)
BN beta, gamma, running mean, running variance (or the bias), then the kernel, float32 little-endian.

A file's length is checked against what the model needs before it is read, from its header and
size alone, and a wrong length names the class count it would fit.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from scaledyolo.errors import UserError
from scaledyolo.files import atomic_write_bytes
from scaledyolo.interop.darknet.layout import conv_modules, darknet_layout
from scaledyolo.models.layers import Conv

if TYPE_CHECKING:
    from scaledyolo.models.yolo import YOLO

WEIGHTS_VERSION = (0, 2, 5)  # major, minor, revision that darknet itself writes today


def _conv_tensors(module: nn.Module) -> list[torch.Tensor]:
    """A convolution's tensors in .weights order: BN beta, gamma, mean, variance (or the bias), then the kernel.

    `module` is a `Conv` (with or without BN) or a bare output `nn.Conv2d` (with its bias).
    """
    conv = module.conv if isinstance(module, Conv) else module
    bn = module.bn if isinstance(module, Conv) else None
    head = ([bn.bias, bn.weight, bn.running_mean, bn.running_var] if isinstance(bn, _BatchNorm) else [conv.bias])
    return head + [conv.weight]


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
    return header_size + 4 * sum(t.numel() for c in conv_modules(model) for t in _conv_tensors(c))


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
        raise UserError(_length_message(model, found, expected), path)


def load_weights(model: "YOLO", path: str | Path) -> tuple[int, int, int, int]:
    """Fill the model's convolutions from a darknet `.weights` file; returns its header.

    The file must hold exactly what the cfg needs: a header, then per convolution BN beta, gamma,
    running mean, running variance (or the bias), then the kernel, all float32 little-endian.
    """
    path = Path(path)
    check_weights_length(model, path)
    data = path.read_bytes()
    header, offset = read_weights_header(data, path)
    convs = conv_modules(model)
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


def _length_message(model: "YOLO", found: int, expected: int) -> str:
    message = f"weights file has the wrong length: the cfg needs {expected} bytes, found {found}"
    layout = darknet_layout(model)
    outputs = [model.get_submodule(layout[i - 1].module) for i, layer in enumerate(layout) if layer.kind == "yolo"]
    outputs = [m.conv if isinstance(m, Conv) else m for m in outputs]
    per_class = sum(model.detect.na * (c.in_channels * c.kernel_size[0] ** 2 + 1) for c in outputs) * 4
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
    for conv in conv_modules(model):
        for t in _conv_tensors(conv):
            parts.append(t.detach().cpu().float().numpy().astype("<f4").tobytes())
    return b"".join(parts)


def save_weights(model: "YOLO", path: str | Path, header: tuple[int, int, int, int] | None = None) -> None:
    """Write the model's darknet `.weights` atomically."""
    atomic_write_bytes(path, weights_bytes(model, header))
