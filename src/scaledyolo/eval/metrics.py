"""Our own fast detection metrics for per-epoch validation: matching, COCO-style AP, P/R, confusion.

It reproduces pycocotools' bbox evaluation rules (area range "all", 100 detections per image and
class, score-ordered greedy matching to the best unmatched ground truth at each IoU threshold,
101-point interpolated precision), so its map/map50 agree with pycocotools on the same predictions
(`tests/test_eval.py`) without the cost of building COCO objects every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from scaledyolo.ops.boxes import box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
CONF_POINTS = np.linspace(0.0, 1.0, 1000)
COCO_MAX_DETS = 100


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a (n, 4) and b (m, 4) -> (n, m), via the package's box ops.

    Exact, without box_iou's eps: pycocotools matches at IoU >= threshold, and an eps would turn an
    IoU of exactly 0.5 into 0.4999999995, a miss. Zero-area pairs (0 / 0) count as IoU 0.
    """
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    iou = box_iou(torch.from_numpy(np.asarray(a, np.float64)), torch.from_numpy(np.asarray(b, np.float64)), eps=0.0)
    return iou.nan_to_num(0.0).numpy()


def match_detections(det: np.ndarray, gt_cls: np.ndarray, gt_boxes: np.ndarray,
                     iou_thresholds: np.ndarray = IOU_THRESHOLDS,
                     max_per_class: int | None = COCO_MAX_DETS) -> tuple[np.ndarray, np.ndarray]:
    """COCO matching of one image's detections (n, 6) [x1, y1, x2, y2, score, class] to its ground truth.

    Returns (kept (n,) bool: within the `max_per_class` best of its class, as pycocotools counts them;
    tp (n, T) bool per IoU threshold). Detections are taken by decreasing score; each takes the
    unmatched same-class ground truth of highest IoU if that IoU reaches the threshold.
    """
    det = np.asarray(det, dtype=np.float64).reshape(-1, 6)
    gt_cls = np.asarray(gt_cls).reshape(-1).astype(np.int64)
    n, t = len(det), len(iou_thresholds)
    tp = np.zeros((n, t), dtype=bool)
    kept = np.ones(n, dtype=bool)
    if n == 0:
        return kept, tp
    order = np.argsort(-det[:, 4], kind="mergesort")
    det_cls = det[:, 5].astype(np.int64)
    if max_per_class is not None:
        rank = np.zeros(n, dtype=np.int64)
        for c in np.unique(det_cls):
            idx = order[det_cls[order] == c]
            rank[idx] = np.arange(len(idx))
        kept = rank < max_per_class
    if len(gt_cls) == 0:
        return kept, tp
    ious = iou_matrix(det[:, :4], gt_boxes)
    ious[det_cls[:, None] != gt_cls[None, :]] = 0.0
    thresholds = np.minimum(np.asarray(iou_thresholds, dtype=np.float64), 1 - 1e-10)[:, None]
    matched = np.zeros((t, len(gt_cls)), dtype=bool)
    candidates = kept & (ious.max(1) >= thresholds.min())
    for d in order:
        if not candidates[d]:
            continue
        masked = np.where(matched, -1.0, ious[d][None, :])
        g = masked.argmax(1)
        ok = masked[np.arange(t), g] >= thresholds[:, 0]
        tp[d, ok] = True
        matched[ok.nonzero()[0], g[ok]] = True
    return kept, tp


def coco_interpolated_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray]:
    """AP as pycocotools computes it: precision envelope sampled at 101 recall points, averaged.

    `recall`, `precision` are cumulative over detections sorted by decreasing score. Returns
    (ap, precision at the 101 recall points).
    """
    q = np.zeros(len(RECALL_POINTS))
    if len(recall):
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        inds = np.searchsorted(recall, RECALL_POINTS, side="left")
        valid = inds < len(recall)
        q[valid] = envelope[inds[valid]]
    return float(q.mean()), q


@dataclass
class APResult:
    """Per-class results; arrays are indexed by class (length nc), AP by (class, IoU threshold).

    Means (`map`, `map50`, `map75`, `precision`, `recall`) are over the classes that have ground truth.
    """

    ap: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    n_gt: np.ndarray
    best_conf: float
    pr_curves: np.ndarray = field(repr=False)
    f1_curve: np.ndarray = field(repr=False)
    p_curves: np.ndarray = field(default_factory=lambda: np.zeros((0, len(CONF_POINTS))), repr=False)
    r_curves: np.ndarray = field(default_factory=lambda: np.zeros((0, len(CONF_POINTS))), repr=False)

    @property
    def f1_curves(self) -> np.ndarray:
        """Per-class F1 (nc, 1000) against the confidence threshold `CONF_POINTS` (IoU 0.5)."""
        return f1_score(self.p_curves, self.r_curves)

    @property
    def present(self) -> np.ndarray:
        return self.n_gt > 0

    def _mean(self, values: np.ndarray) -> float:
        return float(values[self.present].mean()) if self.present.any() else 0.0

    @property
    def map(self) -> float:
        return self._mean(self.ap.mean(1))

    @property
    def map50(self) -> float:
        return self._mean(self.ap[:, 0])

    @property
    def map75(self) -> float:
        return self._mean(self.ap[:, 5])

    @property
    def mp(self) -> float:
        return self._mean(self.precision)

    @property
    def mr(self) -> float:
        return self._mean(self.recall)


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 nc: int) -> APResult:
    """COCO AP per class and IoU threshold, plus precision/recall at the confidence of best mean F1.

    tp (N, T), conf (N,), pred_cls (N,): every kept detection of the data set, in image order;
    target_cls: the class of every ground-truth box.
    """
    tp = np.asarray(tp, dtype=bool)
    if len(conf):
        tp = tp.reshape(len(conf), -1)
    else:  # no detections at all (every AP is 0); reshape cannot infer -1 from an empty array
        tp = np.zeros((0, tp.shape[1] if tp.ndim == 2 and tp.shape[1] else len(IOU_THRESHOLDS)), dtype=bool)
    conf = np.asarray(conf, dtype=np.float64)
    pred_cls = np.asarray(pred_cls).astype(np.int64)
    n_gt = np.bincount(np.asarray(target_cls).astype(np.int64), minlength=nc)[:nc]
    t = tp.shape[1]
    ap = np.zeros((nc, t))
    pr_curves = np.zeros((nc, len(RECALL_POINTS)))
    p_conf = np.zeros((nc, len(CONF_POINTS)))
    r_conf = np.zeros((nc, len(CONF_POINTS)))
    eps = np.spacing(1)
    for c in range(nc):
        if n_gt[c] == 0:
            continue
        idx = np.nonzero(pred_cls == c)[0]
        order = idx[np.argsort(-conf[idx], kind="mergesort")]
        tps = np.cumsum(tp[order], 0, dtype=np.float64)
        fps = np.cumsum(~tp[order], 0, dtype=np.float64)
        recall = tps / n_gt[c]
        precision = tps / (tps + fps + eps)
        for j in range(t):
            ap[c, j], q = coco_interpolated_ap(recall[:, j], precision[:, j])
            if j == 0:
                pr_curves[c] = q
        if len(order):
            # Recall/precision as functions of the confidence threshold (IoU 0.5), for the best-F1 point.
            r_conf[c] = np.interp(-CONF_POINTS, -conf[order], recall[:, 0], left=0)
            p_conf[c] = np.interp(-CONF_POINTS, -conf[order], precision[:, 0], left=1)
    f1 = f1_score(p_conf, r_conf)
    present = n_gt > 0
    f1_mean = f1[present].mean(0) if present.any() else np.zeros(len(CONF_POINTS))
    best = smoothed_peak(f1_mean)
    return APResult(ap=ap, precision=p_conf[:, best], recall=r_conf[:, best], f1=f1[:, best], n_gt=n_gt,
                    best_conf=float(CONF_POINTS[best]), pr_curves=pr_curves, f1_curve=f1_mean,
                    p_curves=p_conf, r_curves=r_conf)


def f1_score(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """Harmonic mean of precision and recall, elementwise (0 where both are 0)."""
    return 2 * precision * recall / (precision + recall + 1e-16)


def smoothed_peak(curve: np.ndarray) -> int:
    """Index of the maximum of `curve` after the box filter the best-F1 choice uses (curves vs confidence)."""
    return int(_smooth(np.asarray(curve, dtype=np.float64)).argmax())


def _smooth(y: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Box-filter a curve so the best-F1 point is not picked on a single noisy sample."""
    k = max(1, round(len(y) * fraction / 2) * 2 + 1)
    padded = np.concatenate((np.full(k // 2, y[0]), y, np.full(k // 2, y[-1])))
    return np.convolve(padded, np.ones(k) / k, mode="valid")


class ConfusionMatrix:
    """(nc + 1) x (nc + 1) counts: rows predicted class, columns true class; index nc is background.

    Detections below `conf` are ignored; a detection and a ground truth match (any class) when their
    IoU exceeds `iou`, each at most once, best IoU first.
    """

    def __init__(self, nc: int, conf: float = 0.25, iou: float = 0.45) -> None:
        self.nc, self.conf, self.iou = nc, conf, iou
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def update(self, det: np.ndarray, gt_cls: np.ndarray, gt_boxes: np.ndarray) -> None:
        """Add one image: det (n, 6) [x1, y1, x2, y2, score, class], its ground truth classes and boxes."""
        det = np.asarray(det, dtype=np.float64).reshape(-1, 6)
        det = det[det[:, 4] >= self.conf]
        gt_cls = np.asarray(gt_cls).reshape(-1).astype(np.int64)
        det_cls = det[:, 5].astype(np.int64)
        ious = iou_matrix(det[:, :4], gt_boxes)
        d, g = np.nonzero(ious > self.iou)
        order = np.argsort(-ious[d, g], kind="mergesort")
        used_d, used_g = set(), set()
        for i in order:
            if d[i] in used_d or g[i] in used_g:
                continue
            used_d.add(d[i])
            used_g.add(g[i])
            self.matrix[det_cls[d[i]], gt_cls[g[i]]] += 1
        for j, c in enumerate(gt_cls):
            if j not in used_g:
                self.matrix[self.nc, c] += 1
        for i, c in enumerate(det_cls):
            if i not in used_d:
                self.matrix[c, self.nc] += 1
