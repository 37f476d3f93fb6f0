"""Box geometry shared by the loss, NMS, evaluation and prediction: one definition of each formula.

Boxes are `(..., 4)`: ``xyxy`` = corners (x1, y1, x2, y2), ``xywh`` = centre (cx, cy) and size (w, h),
in pixels unless a caller says otherwise. Conversions accept torch tensors or numpy arrays and return
the same kind; the IoU family is torch only (it feeds gradients and NMS).
"""

from __future__ import annotations

import math
from typing import Any, Sequence, TypeVar

import numpy as np
import torch

Boxes = TypeVar("Boxes", torch.Tensor, np.ndarray)

IOU_KINDS = ("iou", "giou", "diou", "ciou")


def _empty_like(x: Boxes) -> Boxes:
    return torch.empty_like(x) if isinstance(x, torch.Tensor) else np.empty_like(x)


def xywh2xyxy(x: Boxes) -> Boxes:
    """Centre/size -> corners; a new tensor or array of the same kind and dtype."""
    y = _empty_like(x)
    half_w, half_h = x[..., 2] / 2, x[..., 3] / 2
    y[..., 0] = x[..., 0] - half_w
    y[..., 1] = x[..., 1] - half_h
    y[..., 2] = x[..., 0] + half_w
    y[..., 3] = x[..., 1] + half_h
    return y


def xyxy2xywh(x: Boxes) -> Boxes:
    """Corners -> centre/size; a new tensor or array of the same kind and dtype."""
    y = _empty_like(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of xyxy boxes (negative sizes count as zero)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: `a` (N, 4), `b` (M, 4) -> (N, M).

    Works on per-coordinate (N, 1) x (1, M) broadcasts rather than (N, M, 2) corner
    tensors: about five times faster on CPU, and NMS spends most of its time here.
    `eps` keeps degenerate (zero-area) pairs at 0 instead of NaN.
    """
    ax1, ay1, ax2, ay2 = (a[:, i, None] for i in range(4))
    bx1, by1, bx2, by2 = (b[None, :, i] for i in range(4))
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0) * \
            (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter + eps)


def bbox_iou(b1: torch.Tensor, b2: torch.Tensor, xywh: bool = True, kind: str = "ciou",
             eps: float = 1e-7) -> torch.Tensor:
    """Elementwise IoU / GIoU / DIoU / CIoU of two broadcastable (..., 4) box sets -> (...).

    Differentiable (the box loss uses it). CIoU's trade-off weight alpha is computed without gradient,
    as in the CIoU paper and the official Scaled-YOLOv4 loss, so the aspect-ratio term only pushes the
    aspect ratio. `eps` guards divisions for zero-size boxes.
    """
    if kind not in IOU_KINDS:
        raise ValueError(f"kind must be one of {IOU_KINDS}, got {kind!r}")
    if xywh:
        (x1, y1, w1, h1), (x2, y2, w2, h2) = b1.unbind(-1), b2.unbind(-1)
        b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
        b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    else:
        b1_x1, b1_y1, b1_x2, b1_y2 = b1.unbind(-1)
        b2_x1, b2_y1, b2_x2, b2_y2 = b2.unbind(-1)
        w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1
        w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1

    inter = (torch.minimum(b1_x2, b2_x2) - torch.maximum(b1_x1, b2_x1)).clamp(min=0) * \
            (torch.minimum(b1_y2, b2_y2) - torch.maximum(b1_y1, b2_y1)).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if kind == "iou":
        return iou

    cw = torch.maximum(b1_x2, b2_x2) - torch.minimum(b1_x1, b2_x1)  # enclosing box
    ch = torch.maximum(b1_y2, b2_y2) - torch.minimum(b1_y1, b2_y1)
    if kind == "giou":
        c_area = cw * ch + eps
        return iou - (c_area - union) / c_area
    c2 = cw ** 2 + ch ** 2 + eps  # enclosing diagonal squared
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4  # centre distance squared
    if kind == "diou":
        return iou - rho2 / c2
    v = (4 / math.pi ** 2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def clip_boxes(boxes: Boxes, shape: Sequence[int]) -> Boxes:
    """Clip xyxy boxes to an image of `shape` = (h, w), in place; returns `boxes` for chaining."""
    h, w = shape[0], shape[1]
    boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, w)
    boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, h)
    return boxes


def _axis_gains(ratio: Any, pad: Sequence[float], from_hw: Sequence[int], to_hw: Sequence[int]) -> tuple[float, float]:
    """The (x, y) resize gains in a recorded letterbox ratio, whichever order it was recorded in.

    `letterbox` reports (rw, rh) and the data loader's shapes (rh, rw) (the official order); the two
    differ by the rounding of the resized size, which matters for thin pictures (a 900 x 8 image
    letterboxed to 128 px has rw 0.125, rh 0.142). The gains are whole resized pixels over original
    pixels, so only the right order makes resized size + padding add up to the network input.
    """
    if not isinstance(ratio, (tuple, list)):
        return float(ratio), float(ratio)
    a, b = float(ratio[0]), float(ratio[1])

    def fits(gx: float, gy: float) -> bool:
        """Resized size + twice the left/top padding = network input, or one less (odd padding)."""
        for gain, size, padding, net in ((gx, to_hw[1], pad[0], from_hw[1]), (gy, to_hw[0], pad[1], from_hw[0])):
            rest = net - (gain * size + 2 * padding)
            if not (abs(rest) < 1e-3 or abs(rest - 1) < 1e-3):
                return False
        return True

    if fits(a, b):
        return a, b
    return (b, a) if fits(b, a) else (a, a)


def scale_boxes(boxes: Boxes, from_hw: Sequence[int], to_hw: Sequence[int],
                ratio_pad: tuple | None = None) -> Boxes:
    """Undo a letterbox: xyxy boxes in the network input (`from_hw`) -> the original image (`to_hw`).

    In place (returns `boxes`), then clipped to `to_hw`. With `ratio_pad` = ``(ratio, (padw, padh))``
    (what `letterbox` and the data loader record; `ratio` a number or a pair of per-axis gains in
    either order) the recorded values are used: exact. Without it the gain and the centred padding
    are recomputed from the two shapes, exact up to the rounding of the resized size.
    """
    if ratio_pad is None:
        gain = min(from_hw[0] / to_hw[0], from_hw[1] / to_hw[1])
        gx = gy = gain
        padw, padh = (from_hw[1] - to_hw[1] * gain) / 2, (from_hw[0] - to_hw[0] * gain) / 2
    else:
        ratio, (padw, padh) = ratio_pad
        gx, gy = _axis_gains(ratio, (padw, padh), from_hw, to_hw)
    boxes[..., [0, 2]] = (boxes[..., [0, 2]] - padw) / gx
    boxes[..., [1, 3]] = (boxes[..., [1, 3]] - padh) / gy
    return clip_boxes(boxes, to_hw)
