"""NMS inside an exported graph (`scaledyolo export --nms`), for runtimes that lack our post-processing.

The graph wraps the model's eval output `(B, N, 5 + nc)` and returns two tensors:

- `detections` float32 `(B, max_det, 6)`: per image `x1, y1, x2, y2, score, class` in input pixels
  (the letterboxed picture the graph was fed), best score first; rows past the image's count are zeros.
- `num_detections` int64 `(B,)`: how many rows of `detections` are real.

This is the fixed-size layout that TensorRT's EfficientNMS and most detection runtimes return, so a
consumer needs no dynamic shapes: it reads the first `num_detections[b]` rows of image `b`.

The selection is our `predict`'s (`ops.nms.non_max_suppression` with `multi_label=False`): score =
objectness x class probability, each box keeps its best class and needs a score above `conf`
(which implies objectness above `conf`, as a probability is at most 1), then class-aware greedy NMS
(suppress when IoU > `iou`), at most `max_det` per image. Class awareness uses the per-class
semantics of the standard ONNX `NonMaxSuppression` op rather than the coordinate-offset trick (which
costs float32 precision): the op gets a `(B, nc, N)` score tensor that holds each box's score in its
best class's row and zero elsewhere, so a box competes only within its own class. The op's selected
`(batch, class, box)` triples are scattered back into a dense `(B, N)` kept-score map, and TopK over
it gives the best `max_det`; the maps are padded by `max_det` zero entries so TopK is valid at any
input size. ONNX Runtime and OpenVINO both run the op.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from scaledyolo.errors import UserError
from scaledyolo.ops.nms import MAX_DET, nms

OUTPUT_NAMES = ("detections", "num_detections")
DEFAULT_CONF = 0.25  # predict's defaults
DEFAULT_IOU = 0.45


@dataclass(frozen=True)
class NMSOptions:
    """Thresholds baked into a graph with NMS: score above `conf`, suppress at IoU above `iou`, `max_det` rows."""

    conf: float = DEFAULT_CONF
    iou: float = DEFAULT_IOU
    max_det: int = MAX_DET

    def __post_init__(self) -> None:
        if not 0 <= self.conf <= 1 or not 0 <= self.iou <= 1:
            raise UserError(f"--conf and --iou must be within 0-1, got {self.conf} and {self.iou}")
        if self.max_det < 1:
            raise UserError(f"--max-det must be at least 1, got {self.max_det}")


class _NonMaxSuppression(torch.autograd.Function):
    """The ONNX `NonMaxSuppression` op: exported as that op, computed in torch with our greedy `nms`."""

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, max_per_class: torch.Tensor,  # noqa: ANN001
                iou: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        """`boxes` (B, N, 4) xyxy, `scores` (B, C, N) -> selected (K, 3) int64 `[batch, class, box]`."""
        selected = []
        for b in range(boxes.shape[0]):
            for c in range(scores.shape[1]):
                candidates = (scores[b, c] > conf).nonzero().flatten()
                keep = candidates[nms(boxes[b, candidates], scores[b, c, candidates], float(iou),
                                      int(max_per_class))]
                selected.append(torch.stack((torch.full_like(keep, b), torch.full_like(keep, c), keep), 1))
        return torch.cat(selected) if selected else torch.zeros(0, 3, dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou, conf):  # noqa: ANN001, ANN205
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou, conf, center_point_box_i=0)


class NMSHead(nn.Module):
    """`model` followed by our predict's selection; returns `(detections, num_detections)` (see the module doc)."""

    def __init__(self, model: nn.Module, options: NMSOptions) -> None:
        super().__init__()
        self.model = model
        self.options = options

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.model(images).float()
        half_wh = pred[..., 2:4] / 2
        boxes = torch.cat((pred[..., :2] - half_wh, pred[..., :2] + half_wh), -1)  # as ops.boxes.xywh2xyxy
        class_scores = pred[..., 5:] * pred[..., 4:5]
        score, cls = class_scores.max(-1)
        per_class = torch.zeros_like(class_scores).scatter(-1, cls.unsqueeze(-1), score.unsqueeze(-1))
        opt = self.options
        selected = _NonMaxSuppression.apply(boxes, per_class.transpose(1, 2), torch.tensor([opt.max_det]),
                                            torch.tensor([opt.iou], dtype=torch.float32),
                                            torch.tensor([opt.conf], dtype=torch.float32))
        image, box = selected[:, 0], selected[:, 2]
        kept = torch.zeros_like(score).index_put((image, box), score[image, box])
        pad = torch.zeros_like(score[:, :1]).expand(-1, opt.max_det)
        top, index = torch.cat((kept, pad), 1).topk(opt.max_det, dim=1)
        boxes = torch.cat((boxes, pad.unsqueeze(-1).expand(-1, -1, 4)), 1)
        classes = torch.cat((cls.float(), pad), 1)
        real = (top > 0).unsqueeze(-1)
        rows = torch.cat((boxes.gather(1, index.unsqueeze(-1).expand(-1, -1, 4)), top.unsqueeze(-1),
                          classes.gather(1, index).unsqueeze(-1)), -1)
        return torch.where(real, rows, torch.zeros_like(rows)), real.squeeze(-1).sum(1)
