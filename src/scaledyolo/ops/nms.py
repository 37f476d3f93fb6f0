"""Greedy non-maximum suppression in pure torch (no torchvision), exact and fast on CPU and GPU.

The result is exactly that of textbook greedy NMS (take the best-scoring box, drop every box that
overlaps it by more than the threshold, repeat; equal scores: lower index first), computed without
a Python step per box pair:

- boxes are sorted by score and taken in blocks; per block one IoU matrix within the block, and one
  against the boxes already kept, are computed at once;
- inside a block the greedy pass runs over a boolean "overlaps too much" matrix: on CPU a loop that
  ORs the numpy row of each kept box into a removed mask, on GPU Cluster-NMS (Zheng et al. 2020), a
  fixed-point iteration of whole-matrix steps that provably gives the greedy result;
- the pass stops as soon as `max_keep` boxes are kept, so with `max_det` = 300 the work is bounded
  by about N x (block + 300) IoUs however many candidates there are (10k random boxes x 80 classes:
  a few ms on one CPU core).

Class-aware NMS (`batched_nms`) must never let a box of one class suppress a box of another. The
usual way is the coordinate-offset trick (shift each class's boxes by class x a large offset so that
classes never overlap, then run one class-agnostic pass). In float32 that shift costs precision
(boxes moved by ~3e5 px keep about 0.03 px), which flips decisions near the threshold, so we get
the same single pass exactly by masking the overlap matrices with "same class". Without a
`max_keep` bound, large inputs run one pass per class instead (the work then grows with the
per-class counts, not with the square of the total).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from scaledyolo.ops.boxes import box_iou, xywh2xyxy

BLOCK = {"cpu": 512, "cuda": 4096}  # boxes per greedy block; GPUs prefer fewer, larger steps
SINGLE_PASS_MAX = 1024  # batched_nms without max_keep: up to this many boxes, one pass beats a class loop
MAX_NMS = 30000  # candidates kept (best scores first) before NMS in `non_max_suppression`
MAX_DET = 300


def _greedy_loop(over: torch.Tensor, limit: int | None) -> torch.Tensor:
    """Greedy selection on an (n, n) "row i suppresses column j" matrix of boxes sorted by score.

    The CPU way: visit boxes best first and OR the row of each kept box into the removed set, so the
    Python work is one cheap step per box and one vectorised step per kept box. Returns the kept
    positions, increasing; only entries with j > i matter.
    """
    m = over.cpu().numpy()
    removed = np.zeros(m.shape[0], dtype=bool)
    keep = []
    for i in range(m.shape[0]):
        if removed[i]:
            continue
        keep.append(i)
        if limit is not None and len(keep) >= limit:
            break
        removed[i + 1:] |= m[i, i + 1:]
    return torch.tensor(keep, dtype=torch.long, device=over.device)


def _greedy_cluster(over: torch.Tensor, limit: int | None) -> torch.Tensor:
    """The same selection as `_greedy_loop` by Cluster-NMS, whole-matrix steps only (the GPU way).

    A box is kept iff no kept higher-scoring box suppresses it; iterating that rule from "all kept"
    reaches its unique fixed point, which is the greedy result, in as many steps as the longest
    chain of suppressions (a handful in practice).
    """
    upper = torch.triu(over, diagonal=1)
    keep = torch.ones(over.shape[0], dtype=torch.bool, device=over.device)
    while True:
        new = ~(upper & keep[:, None]).any(0)
        if torch.equal(new, keep):
            break
        keep = new
    idx = keep.nonzero().flatten()
    return idx if limit is None else idx[:limit]


def _greedy_rows(over: torch.Tensor, limit: int | None) -> torch.Tensor:
    return _greedy_loop(over, limit) if over.device.type == "cpu" else _greedy_cluster(over, limit)


def _sorted_greedy(boxes: torch.Tensor, idxs: torch.Tensor | None, iou_threshold: float,
                   limit: int | None) -> torch.Tensor:
    """Greedy NMS over boxes already sorted by decreasing score; kept positions, increasing.

    With `idxs`, only boxes of the same class suppress each other.
    """
    n = boxes.shape[0]
    block = BLOCK.get(boxes.device.type, BLOCK["cuda"])
    kept: list[torch.Tensor] = []
    n_kept = 0
    for start in range(0, n, block):
        cand = torch.arange(start, min(start + block, n), device=boxes.device)
        if n_kept:
            prev = torch.cat(kept)
            for s in range(0, prev.numel(), 8 * block):  # drop candidates that a kept box overlaps
                p = prev[s:s + 8 * block]
                over = box_iou(boxes[p], boxes[cand]) > iou_threshold
                if idxs is not None:
                    over &= idxs[p][:, None] == idxs[cand][None, :]
                cand = cand[~over.any(0)]
                if not cand.numel():
                    break
        if cand.numel():
            over = box_iou(boxes[cand], boxes[cand]) > iou_threshold
            if idxs is not None:
                over &= idxs[cand][:, None] == idxs[cand][None, :]
            sel = cand[_greedy_rows(over, None if limit is None else limit - n_kept)]
            kept.append(sel)
            n_kept += sel.numel()
        if limit is not None and n_kept >= limit:
            break
    if not kept:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    return torch.cat(kept)


def _check(boxes: torch.Tensor, scores: torch.Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"expected boxes (N, 4) and scores (N,), got {tuple(boxes.shape)} and {tuple(scores.shape)}")


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
        max_keep: int | None = None) -> torch.Tensor:
    """Class-agnostic greedy NMS of xyxy `boxes` (N, 4) with `scores` (N,).

    Returns the indices of the kept boxes in decreasing score order (at most `max_keep` of them).
    A box is suppressed when its IoU with a kept, higher-scoring box is strictly above `iou_threshold`.
    """
    _check(boxes, scores)
    order = scores.argsort(descending=True, stable=True)
    return order[_sorted_greedy(boxes[order].float(), None, iou_threshold, max_keep)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float,
                max_keep: int | None = None) -> torch.Tensor:
    """Class-aware greedy NMS: boxes only suppress boxes with the same `idxs` (class) value.

    Returns kept indices in decreasing score order, at most `max_keep`; the result equals running
    `nms` per class and merging by score. `idxs` (N,) holds any integers (class indices, or
    image x classes + class to run several images at once).
    """
    _check(boxes, scores)
    if max_keep is not None or boxes.shape[0] <= SINGLE_PASS_MAX:
        order = scores.argsort(descending=True, stable=True)
        return order[_sorted_greedy(boxes[order].float(), idxs[order], iou_threshold, max_keep)]
    classes, counts = torch.unique(idxs, return_counts=True)
    if classes.numel() == 1:
        return nms(boxes, scores, iou_threshold, max_keep)
    by_class = idxs.argsort(stable=True)
    kept = [members[nms(boxes[members], scores[members], iou_threshold, max_keep)]
            for members in by_class.split(counts.tolist())]
    keep = torch.cat(kept).sort().values  # equal scores: lower index first, as in one pass
    keep = keep[scores[keep].argsort(descending=True, stable=True)]
    return keep if max_keep is None else keep[:max_keep]


def non_max_suppression(pred: torch.Tensor, conf_thres: float = 0.25, iou_thres: float = 0.45,
                        classes: Sequence[int] | None = None, agnostic: bool = False, multi_label: bool = False,
                        max_det: int = MAX_DET, max_nms: int = MAX_NMS) -> list[torch.Tensor]:
    """Eval-mode model output (B, N, 5 + nc) -> per image an (n, 6) tensor x1, y1, x2, y2, score, class.

    `score` = objectness x class probability; a candidate needs objectness and score above
    `conf_thres`. `multi_label` gives one row per class above the threshold (what mAP evaluation
    wants); otherwise each box keeps its best class. `classes` keeps only those class indices;
    `agnostic` lets boxes of different classes suppress each other. At most `max_nms` candidates
    (best scores) enter NMS and at most `max_det` rows come out, best first.
    """
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise ValueError(f"conf_thres and iou_thres must be within [0, 1], got {conf_thres} and {iou_thres}")
    if pred.ndim != 3 or pred.shape[-1] < 6:
        raise ValueError(f"expected predictions (B, N, 5 + nc), got {tuple(pred.shape)}")
    wanted = None if classes is None else torch.as_tensor(list(classes), device=pred.device)
    output = []
    for x in pred:
        x = x[(x[:, 4] > conf_thres) & torch.isfinite(x[:, :5]).all(1)].float()
        cls_scores = x[:, 5:] * x[:, 4:5]
        box = xywh2xyxy(x[:, :4])
        if multi_label:
            i, j = (cls_scores > conf_thres).nonzero(as_tuple=True)
            box, score, cls = box[i], cls_scores[i, j], j
        else:
            score, cls = cls_scores.max(1) if x.shape[0] else (x[:, 4], x[:, 4].long())
            mask = score > conf_thres
            box, score, cls = box[mask], score[mask], cls[mask]
        if wanted is not None:
            mask = torch.isin(cls, wanted)
            box, score, cls = box[mask], score[mask], cls[mask]
        if score.numel() > max_nms:
            top = score.topk(max_nms).indices
            box, score, cls = box[top], score[top], cls[top]
        if agnostic:
            keep = nms(box, score, iou_thres, max_det)
        else:
            keep = batched_nms(box, score, cls, iou_thres, max_det)
        output.append(torch.cat((box[keep], score[keep, None], cls[keep, None].float()), 1))
    return output
