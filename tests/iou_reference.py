"""Float64 IoU / GIoU / DIoU / CIoU written from the papers' formulas, as the tests' reference.

GIoU (Rezatofighi et al. 2019): IoU - |C \\ (A u B)| / |C|, C the smallest enclosing box.
DIoU (Zheng et al. 2020): IoU - rho^2(b, b_gt) / c^2, rho the centre distance, c the diagonal of C.
CIoU (same paper): DIoU - alpha v, v = 4 / pi^2 (atan(w_gt / h_gt) - atan(w / h))^2 and
alpha = v / ((1 - IoU) + v), a trade-off weight the paper treats as a constant in the gradient.
Boxes are (cx, cy, w, h); everything is computed from corners, independently of `scaledyolo.ops`.
"""

from __future__ import annotations

import math

import torch


def corners(b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    cx, cy, w, h = b.unbind(-1)
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def iou_family(pred: torch.Tensor, gt: torch.Tensor, kind: str, alpha_grad: bool = False) -> torch.Tensor:
    """The paper's value of `kind` for (..., 4) xywh float64 boxes; `alpha_grad` lets alpha carry gradient."""
    ax1, ay1, ax2, ay2 = corners(pred)
    bx1, by1, bx2, by2 = corners(gt)
    iw = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0)
    ih = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    iou = inter / union
    if kind == "iou":
        return iou
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    if kind == "giou":
        return iou - (cw * ch - union) / (cw * ch)
    rho2 = (pred[..., 0] - gt[..., 0]) ** 2 + (pred[..., 1] - gt[..., 1]) ** 2
    diou = iou - rho2 / (cw ** 2 + ch ** 2)
    if kind == "diou":
        return diou
    v = 4 / math.pi ** 2 * (torch.atan(gt[..., 2] / gt[..., 3]) - torch.atan(pred[..., 2] / pred[..., 3])) ** 2
    alpha = v / ((1 - iou) + v)
    return diou - v * (alpha if alpha_grad else alpha.detach())
