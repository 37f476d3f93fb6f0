"""The one box-decoding rule of a member, shared by the head (`Detect.decode`) and the loss.

Two rules, chosen by `ModelSpec.decode`:
- `darknet` (yolov4-tiny and darknet cfgs without new_coords): centre offset
  `sigmoid(t) * scale_xy - (scale_xy - 1) / 2` cells, size `exp(t) * anchor`;
- `scaled` (yolov4-csp, P5-P7, new_coords=1): centre offset `2 * sigmoid(t) - 0.5` cells, size
  `(2 * sigmoid(t))**2 * anchor`, bounded by 4x the anchor.
If the two users decoded separately, training and inference could drift apart without a sign.
"""

from __future__ import annotations

import torch


def decode_boxes(raw: torch.Tensor, anchors: torch.Tensor, rule: str, scale_xy: float,
                 sig: torch.Tensor | None = None, max_exp: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw box logits `(..., >= 4)` -> (centre offset from the cell's corner in cells, size in `anchors`' unit).

    `sig`: the sigmoid of `raw` when the caller has it already (the head needs it for the scores);
    `max_exp`: clamp of the darknet size logit before `exp` (the loss keeps its gradients finite).
    """
    sig = raw[..., :4].sigmoid() if sig is None else sig
    if rule == "darknet":
        xy = sig[..., :2] * scale_xy - 0.5 * (scale_xy - 1.0)
        logits = raw[..., 2:4] if max_exp is None else raw[..., 2:4].clamp(max=max_exp)
        return xy, torch.exp(logits) * anchors
    return sig[..., :2] * 2.0 - 0.5, (sig[..., 2:4] * 2.0) ** 2 * anchors
