"""Label geometry checks: a sample's boxes against its image size and the data's classes.

A label that makes the sample unusable raises `formats.LabelError`; small fixes (boxes clipped to
the image, duplicate rows dropped) are made and returned as notes.
"""

from __future__ import annotations

import numpy as np

from scaledyolo.data import formats
from scaledyolo.ops.boxes import xywh2xyxy, xyxy2xywh

CLIP_TOLERANCE = 0.01  # boxes out of the image by at most this fraction are clipped without a note


def validate_labels(sample: formats.Sample, hw: tuple[int, int], nc: int) -> tuple[np.ndarray, list[str]]:
    """A sample's boxes as normalised [cls, cx, cy, w, h], and notes on what was fixed.

    Raises `formats.LabelError` for a label that makes the sample unusable: class out of range,
    non-finite or non-positive size, box wholly outside the image.
    """
    h, w = hw
    n = len(sample.classes)
    if n == 0:
        return np.zeros((0, 5), np.float32), []
    boxes = np.asarray(sample.boxes, dtype=np.float64)
    if not np.isfinite(boxes).all():
        raise formats.LabelError(f"box {int(np.nonzero(~np.isfinite(boxes).all(1))[0][0]) + 1}: non-finite coordinate")
    xyxy = xywh2xyxy(boxes) if sample.normalized else boxes / np.array([w, h, w, h], dtype=np.float64)
    classes = np.asarray(sample.classes, dtype=np.int64)
    bad_cls = np.nonzero((classes < 0) | (classes >= nc))[0]
    if len(bad_cls):
        i = int(bad_cls[0])
        raise formats.LabelError(f"box {i + 1}: class {classes[i]} out of range (the data has {nc} classes: 0-{nc - 1})")
    size = np.stack((xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]), 1)
    bad_size = np.nonzero((size <= 0).any(1))[0]
    if len(bad_size):
        i = int(bad_size[0])
        raise formats.LabelError(f"box {i + 1}: non-positive size (w={size[i, 0] * w:g}, h={size[i, 1] * h:g} px)")
    outside = np.nonzero((xyxy[:, 2] <= 0) | (xyxy[:, 0] >= 1) | (xyxy[:, 3] <= 0) | (xyxy[:, 1] >= 1))[0]
    if len(outside):
        raise formats.LabelError(f"box {int(outside[0]) + 1}: wholly outside the {w}x{h} image")
    notes = []
    over = np.maximum(-xyxy.min(1), (xyxy - 1).max(1))
    if (over > CLIP_TOLERANCE).any():
        notes.append(f"{int((over > CLIP_TOLERANCE).sum())} box(es) partly outside the image, clipped")
    xyxy = xyxy.clip(0, 1)
    out = np.zeros((n, 5), np.float32)
    out[:, 0] = classes
    out[:, 1:] = xyxy2xywh(xyxy)
    _, first = np.unique(out, axis=0, return_index=True)
    if len(first) < n:
        notes.append(f"{n - len(first)} duplicate label(s) dropped")
        out = out[np.sort(first)]
    return out, notes
