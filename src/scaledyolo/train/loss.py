"""The Scaled-YOLOv4 training loss: CIoU boxes, BCE objectness with IoU targets, BCE classes.

The facts follow the official yolov4-large `compute_loss` / `build_targets`:

* a target is assigned, on every level, to each anchor whose width and height ratios to the
  target are all below `anchor_t` (4), in the cell holding its centre; with the 'scaled' decoding
  (offsets 2 sigma - 0.5, in -0.5..1.5) it is also assigned to the two neighbouring cells whose
  centres are nearest (left/right and up/down), which that offset range can still reach;
* box loss = mean(1 - CIoU) over assigned predictions, decoded with the model's own rule;
* objectness target = the detached CIoU clamped at 0 (0 elsewhere), BCE per level weighted by a
  balance (finest level first): [4, 1, 0.4] for 3 levels, [4, 1, 0.4, 0.1] for 4,
  [4, 1, 0.5, 0.4, 0.1] for 5;
* class loss = BCE against one-hot targets (only when there is more than one class);
* gains giou / obj / cls from the hyper-parameters, times 3 / levels (objectness times 1.4 more
  for 4+ levels), and the total times the batch size.

Two choices of ours for YOLOv4-tiny (2 levels, darknet decoding sigmoid * 1.05 - 0.025, exp sizes):
the balance is [4, 1] (finest level first, like every official balance), and targets go to the
centre cell only, because that offset range (-0.025..1.025) cannot reach a centre in a
neighbouring cell (a darknet level with scale_x_y >= 2 reaches -0.5..1.5 and gets the neighbours).
Its raw size logits are clamped at 6 before exp so one wild prediction cannot overflow the loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from scaledyolo.hyp import load_hyp
from scaledyolo.models.decode import decode_boxes
from scaledyolo.ops.boxes import bbox_iou

BALANCE = {1: [1.0], 2: [4.0, 1.0], 3: [4.0, 1.0, 0.4], 4: [4.0, 1.0, 0.4, 0.1], 5: [4.0, 1.0, 0.5, 0.4, 0.1]}
MAX_EXP = 6.0  # raw size logit clamp for the darknet exp decoding (exp(6) = 403 x anchor)


class FocalLoss(nn.Module):
    """Focal modulation (alpha 0.25) around a BCE-with-logits loss; used when fl_gamma > 0."""

    def __init__(self, bce: nn.BCEWithLogitsLoss, gamma: float, alpha: float = 0.25) -> None:
        super().__init__()
        self.bce = bce
        self.bce.reduction = "none"
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.bce(logits, target)
        prob = logits.sigmoid()
        p_t = target * prob + (1 - target) * (1 - prob)
        alpha = target * self.alpha + (1 - target) * (1 - self.alpha)
        return (loss * alpha * (1.0 - p_t) ** self.gamma).mean()


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel / DataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ComputeLoss:
    """`ComputeLoss(model, hyp)(preds, targets) -> (loss, parts)`.

    preds: the train-mode output, one raw map `(B, A, H, W, 5 + nc)` per kept level of `model`.
    targets: `(n, 6)` rows `[image_index, class, cx, cy, w, h]`, box normalised to 0-1.
    loss: the batch-size-scaled total (1-element tensor); parts: detached `[box, obj, cls, total]`.
    """

    def __init__(self, model: nn.Module, hyp: dict[str, Any] | None = None) -> None:
        model = unwrap(model)
        detect = model.detect
        self.hyp = load_hyp(hyp)
        self.nc = detect.nc
        self.na = detect.na
        self.levels = list(getattr(model, "levels", range(len(detect.strides))))
        self.decode_rule = detect.decode_rule
        self.detect = detect
        self.balance = BALANCE.get(len(detect.strides), [4.0, 1.0] + [0.4] * (len(detect.strides) - 2))
        self.neighbours = [self.decode_rule != "darknet" or detect.scale_xy[level] >= 2.0
                           for level in range(len(detect.strides))]
        device = next(model.parameters()).device
        self.bce_cls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.hyp["cls_pw"]], device=device))
        self.bce_obj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([self.hyp["obj_pw"]], device=device))
        if self.hyp["fl_gamma"] > 0:
            self.bce_cls = FocalLoss(self.bce_cls, self.hyp["fl_gamma"])
            self.bce_obj = FocalLoss(self.bce_obj, self.hyp["fl_gamma"])

    def _decode(self, ps: torch.Tensor, anchors: torch.Tensor, level: int) -> torch.Tensor:
        """Assigned raw predictions -> boxes (cx, cy offset within the cell, w, h) in grid units (the head's rule)."""
        pxy, pwh = decode_boxes(ps, anchors, self.decode_rule, self.detect.scale_xy[level], max_exp=MAX_EXP)
        return torch.cat((pxy, pwh), 1)

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = preds[0].device
        targets = targets.to(device=device, dtype=torch.float32)
        lbox = torch.zeros(1, device=device)
        lobj = torch.zeros(1, device=device)
        lcls = torch.zeros(1, device=device)
        assigned = self.build_targets(preds, targets)
        for level, pi, (b, a, gj, gi, tbox, anchors, tcls) in zip(self.levels, preds, assigned):
            tobj = torch.zeros(pi.shape[:4], device=device, dtype=torch.float32)
            if b.numel():
                ps = pi[b, a, gj, gi].float()
                iou = bbox_iou(self._decode(ps, anchors, level), tbox, xywh=True, kind="ciou")
                lbox += (1.0 - iou).mean()
                tobj[b, a, gj, gi] = iou.detach().clamp(0).to(tobj.dtype)
                if self.nc > 1:
                    t = torch.zeros_like(ps[:, 5:])
                    t[torch.arange(len(tcls), device=device), tcls] = 1.0
                    lcls += self.bce_cls(ps[:, 5:], t)
            lobj += self.bce_obj(pi[..., 4].float(), tobj) * self.balance[level]
        scale = 3.0 / len(self.detect.strides)
        lbox *= self.hyp["giou"] * scale
        lobj *= self.hyp["obj"] * scale * (1.4 if len(self.detect.strides) >= 4 else 1.0)
        lcls *= self.hyp["cls"] * scale
        total = lbox + lobj + lcls
        return total * preds[0].shape[0], torch.cat((lbox, lobj, lcls, total)).detach()

    def build_targets(self, preds: list[torch.Tensor], targets: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """Per level: image, anchor, cell y, cell x indices, target box (grid units, offset in cell), anchors, class."""
        device = targets.device
        nt = targets.shape[0]
        anchor_index = torch.arange(self.na, device=device, dtype=torch.float32).view(self.na, 1).expand(self.na, nt)
        # (na, nt, 7): every target once per anchor, with the anchor index appended
        all_targets = torch.cat((targets.unsqueeze(0).expand(self.na, nt, 6), anchor_index[..., None]), 2)
        g = 0.5
        offsets_all = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device, dtype=torch.float32) * g
        out = []
        for level, pi in zip(self.levels, preds):
            _, _, h, w, _ = pi.shape
            anchors = self.detect.anchors[level].to(device=device, dtype=torch.float32) / self.detect.strides[level]
            gain = torch.tensor([1, 1, w, h, w, h, 1], device=device, dtype=torch.float32)
            t = all_targets * gain
            if nt:
                ratio = t[..., 4:6] / anchors[:, None]
                t = t[torch.max(ratio, 1.0 / ratio).max(2)[0] < self.hyp["anchor_t"]]
                gxy = t[:, 2:4]
                if self.neighbours[level]:
                    gxi = gain[[2, 3]] - gxy
                    left, up = ((gxy % 1.0 < g) & (gxy > 1.0)).T
                    right, down = ((gxi % 1.0 < g) & (gxi > 1.0)).T
                    mask = torch.stack((torch.ones_like(left), left, up, right, down))
                    t = t.repeat((5, 1, 1))[mask]
                    offsets = (torch.zeros_like(gxy)[None] + offsets_all[:, None])[mask]
                else:
                    offsets = torch.zeros_like(gxy)
            else:
                t = all_targets[0]
                offsets = torch.zeros_like(t[:, 2:4])
            b, c = t[:, :2].long().T
            gxy, gwh = t[:, 2:4], t[:, 4:6]
            gij = (gxy - offsets).long()
            gi = gij[:, 0].clamp(0, w - 1)
            gj = gij[:, 1].clamp(0, h - 1)
            a = t[:, 6].long()
            tbox = torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1)
            out.append((b, a, gj, gi, tbox, anchors[a], c))
        return out
