"""The picture set a validation pass writes into its plots folder (`validate(..., plots_dir=...)`).

PR_curve.png, F1_curve.png, P_curve.png, R_curve.png, confusion_matrix.png (counts) and
confusion_matrix_normalized.png (each true class's column sums to 1), and for the first
`PLOT_BATCHES` batches val_batch{i}_labels.jpg (ground truth) beside val_batch{i}_pred.jpg
(predictions scoring at least 0.25), the files ultralytics users look for in a run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scaledyolo.eval.metrics import CONF_POINTS, RECALL_POINTS, APResult
from scaledyolo.eval.plots import plot_batch, plot_confusion_matrix, plot_metric_curve, plot_pr_curve
from scaledyolo.ops.boxes import xyxy2xywh

PLOT_BATCHES = 3  # val_batch0..2 pictures
CURVE_FILES = {"F1_curve.png": ("F1", "f1_curves"), "P_curve.png": ("Precision", "p_curves"),
               "R_curve.png": ("Recall", "r_curves")}


def write_val_plots(folder: Path, own: APResult, confusion_matrix: np.ndarray, names: Sequence[str],
                    batches: Sequence[tuple]) -> list[Path]:
    """Write the curves, both confusion matrices and the batch pictures; returns the files written.

    `batches`: (imgs, targets, paths, shapes, per-image predictions in original pixels) per batch.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = list(names)
    written = [plot_pr_curve(RECALL_POINTS, own.pr_curves, own.ap[:, 0], names, folder / "PR_curve.png",
                             present=own.present)]
    for file, (ylabel, attribute) in CURVE_FILES.items():
        written.append(plot_metric_curve(CONF_POINTS, getattr(own, attribute), names, folder / file, ylabel,
                                         present=own.present))
    written.append(plot_confusion_matrix(confusion_matrix, names, folder / "confusion_matrix.png", normalize=False))
    written.append(plot_confusion_matrix(confusion_matrix, names, folder / "confusion_matrix_normalized.png",
                                         normalize=True))
    for i, (imgs, targets, paths, shapes, preds) in enumerate(batches[:PLOT_BATCHES]):
        written.append(plot_batch(imgs, targets, paths, names, folder / f"val_batch{i}_labels.jpg"))
        written.append(plot_batch(imgs, to_input_targets(preds, shapes), paths, names,
                                  folder / f"val_batch{i}_pred.jpg"))
    return written


def to_input_targets(preds: Sequence[np.ndarray], shapes: Sequence) -> np.ndarray:
    """Predictions in original pixels -> plot_batch rows [i, class, cx, cy, w, h, score] in input pixels.

    The loader records the gains as (rh, rw); each axis gets its own (they differ for thin pictures).
    """
    rows = []
    for i, (det, shape) in enumerate(zip(preds, shapes)):
        if not len(det):
            continue
        (gy, gx), (padw, padh) = _ratio_pad(shape[1])
        boxes = det[:, :4] * np.array([gx, gy, gx, gy]) + np.array([padw, padh, padw, padh])
        xywh = xyxy2xywh(boxes)
        rows.append(np.concatenate((np.full((len(det), 1), i), det[:, 5:6], xywh, det[:, 4:5]), 1))
    return np.concatenate(rows, 0) if rows else np.zeros((0, 7))


def _ratio_pad(ratio_pad: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    ratio, pad = ratio_pad
    ratio = tuple(ratio) if isinstance(ratio, (tuple, list)) else (ratio, ratio)
    return (float(ratio[0]), float(ratio[1])), (float(pad[0]), float(pad[1]))
