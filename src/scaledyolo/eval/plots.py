"""Evaluation pictures: PR, F1, P and R curves, confusion matrix, label statistics, batch mosaics.

The names and layout follow what users know from ultralytics run folders (PR_curve.png with
mAP@0.5 per class in the legend, F1/P/R against the confidence threshold with the all-classes
curve's peak, a (classes + background) confusion matrix raw and column-normalised, labels.jpg).

Everything renders off-screen (matplotlib's Agg backend; the mosaic is `scaledyolo.drawing`'s) and is
written atomically, so it works on headless servers and never leaves half-written files.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from scaledyolo.drawing import class_color, tile_batch, write_image
from scaledyolo.eval.metrics import smoothed_peak
from scaledyolo.files import atomic_write_bytes
from scaledyolo.ops.boxes import xywh2xyxy

MAX_LABELLED = 20  # classes drawn in colour with a legend entry; more are drawn in grey, unlabelled


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, file: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(file).suffix.lstrip(".") or "png", dpi=200)
    _pyplot().close(fig)
    return atomic_write_bytes(file, buf.getvalue())


def plot_pr_curve(recall_points: np.ndarray, pr_curves: np.ndarray, ap50: np.ndarray, names: Sequence[str],
                  file: str | Path, present: np.ndarray | None = None) -> Path:
    """Precision-recall curves at IoU 0.5: one per class with ground truth (labelled up to 20) and their mean."""
    plt = _pyplot()
    present = np.ones(len(pr_curves), dtype=bool) if present is None else np.asarray(present, dtype=bool)
    fig, ax = plt.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    labelled = present.sum() <= MAX_LABELLED
    for c in np.nonzero(present)[0]:
        label = f"{names[c]} {ap50[c]:.3f}" if labelled else None
        ax.plot(recall_points, pr_curves[c], linewidth=1, label=label, color=None if labelled else "grey")
    if present.any():
        ax.plot(recall_points, pr_curves[present].mean(0), linewidth=3, color="blue",
                label=f"all classes {ap50[present].mean():.3f} mAP@0.5")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize=8)
    ax.set_title("Precision-Recall curve (IoU 0.5)")
    return _save_figure(fig, file)


def plot_metric_curve(conf_points: np.ndarray, curves: np.ndarray, names: Sequence[str], file: str | Path,
                      ylabel: str, present: np.ndarray | None = None) -> Path:
    """One metric (F1, precision or recall) against the confidence threshold: per class with ground
    truth, and their mean, whose smoothed peak (the point validation reports) is in its legend."""
    plt = _pyplot()
    curves = np.asarray(curves, dtype=np.float64).reshape(-1, len(conf_points))
    present = np.ones(len(curves), dtype=bool) if present is None else np.asarray(present, dtype=bool)
    fig, ax = plt.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    labelled = present.sum() <= MAX_LABELLED
    for c in np.nonzero(present)[0]:
        ax.plot(conf_points, curves[c], linewidth=1, label=names[c] if labelled else None,
                color=None if labelled else "grey")
    if present.any():
        mean = curves[present].mean(0)
        best = smoothed_peak(mean)
        ax.plot(conf_points, mean, linewidth=3, color="blue",
                label=f"all classes {mean[best]:.2f} at {conf_points[best]:.3f}")
    ax.set_xlabel("Confidence")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize=8)
    ax.set_title(f"{ylabel}-Confidence curve (IoU 0.5)")
    return _save_figure(fig, file)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], file: str | Path, normalize: bool = True) -> Path:
    """Heat map of a (nc + 1)^2 confusion matrix (rows predicted, columns true; last = background)."""
    plt = _pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    if normalize:
        m = m / np.maximum(m.sum(0, keepdims=True), 1e-9)
    m[m < 0.005] = np.nan
    labels = list(names) + ["background"]
    n = len(labels)
    fig, ax = plt.subplots(1, 1, figsize=(max(6, 0.3 * n + 4), max(5, 0.3 * n + 3)), tight_layout=True)
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046)
    peak = float(np.nanmax(m)) if not np.isnan(m).all() else 1.0
    if n <= 30:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        for i in range(n):
            for j in range(n):
                if not np.isnan(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}", ha="center", va="center",
                            fontsize=6, color="white" if m[i, j] > 0.5 * peak else "black")
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    ax.set_title("Confusion matrix" + (" (column-normalised)" if normalize else ""))
    return _save_figure(fig, file)


def plot_batch(imgs: Any, targets: Any, paths: Sequence[str] | None, names: Sequence[str] | None,
               file: str | Path, max_images: int = 16, max_size: int = 1920) -> Path:
    """Write a mosaic of a batch with its boxes (`scaledyolo.drawing.tile_batch`; the same inputs)."""
    mosaic = tile_batch(imgs, targets, names, paths, max_images=max_images, max_size=max_size)
    return write_image(file, mosaic)


def plot_labels(labels: Any, names: Sequence[str], path: str | Path, max_boxes: int = 1000) -> Path:
    """labels.jpg: what the training set holds, before any training is spent on it.

    `labels`: per-image arrays of rows [class, cx, cy, w, h] normalised 0-1 (a dataset's `.labels`),
    or one (n, 5) array. Four panels: instances per class, the first `max_boxes` boxes drawn about a
    common centre (their shapes), box centres x/y and box width/height as 2-D histograms.
    """
    rows = [np.asarray(lab, dtype=np.float64).reshape(-1, 5) for lab in labels] if not isinstance(
        labels, np.ndarray) else [np.asarray(labels, dtype=np.float64).reshape(-1, 5)]
    table = np.concatenate(rows, 0) if rows else np.zeros((0, 5))
    nc = max(len(names), int(table[:, 0].max()) + 1 if len(table) else 0)
    classes = table[:, 0].astype(np.int64)
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(8, 8), tight_layout=True)
    ax = axes.ravel()
    counts = np.bincount(classes, minlength=nc)
    ax[0].bar(range(nc), counts, width=0.8, color=[np.array(class_color(c)) / 255 for c in range(nc)])
    ax[0].set_ylabel("instances")
    if 0 < len(names) < 30:
        ax[0].set_xticks(range(len(names)), list(names), rotation=90, fontsize=8)
    else:
        ax[0].set_xlabel("classes")
    ax[1].imshow(_box_shapes(table[:max_boxes]))
    ax[1].axis("off")
    ax[1].set_title(f"box shapes ({min(len(table), max_boxes)} of {len(table)})", fontsize=9)
    for a, (i, j), (xl, yl) in zip(ax[2:], ((1, 2), (3, 4)), (("x", "y"), ("width", "height"))):
        a.hist2d(table[:, i], table[:, j], bins=50, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1, vmin=0)
        a.set_xlabel(xl)
        a.set_ylabel(yl)
        a.set_xlim(0, 1)
        a.set_ylim(0, 1)
    ax[2].invert_yaxis()  # image coordinates: y grows downwards
    return _save_figure(fig, path)


def _box_shapes(table: np.ndarray, size: int = 1000) -> np.ndarray:
    """An RGB canvas with every box outlined in its class colour, all centred on the canvas centre."""
    canvas = np.full((size, size, 3), 255, dtype=np.uint8)
    if len(table):
        centred = np.concatenate((np.full((len(table), 2), 0.5), table[:, 3:5]), 1)
        for c, box in zip(table[:, 0].astype(np.int64), xywh2xyxy(centred) * size):
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), class_color(c), 1)
    return canvas
