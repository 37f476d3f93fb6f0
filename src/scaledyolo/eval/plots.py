"""Evaluation pictures: PR curve, confusion matrix, and a labelled batch mosaic (shared with training).

Everything renders off-screen (matplotlib's Agg backend; the mosaic is `scaledyolo.drawing`'s) and is
written atomically, so it works on headless servers and never leaves half-written files.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scaledyolo.drawing import tile_batch, write_image
from scaledyolo.files import atomic_write_bytes


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
    labelled = present.sum() <= 20
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
    if n <= 30:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        for i in range(n):
            for j in range(n):
                if not np.isnan(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}", ha="center", va="center",
                            fontsize=6, color="white" if m[i, j] > 0.5 * np.nanmax(m) else "black")
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    ax.set_title("Confusion matrix" + (" (column-normalised)" if normalize else ""))
    return _save_figure(fig, file)


def plot_batch(imgs: Any, targets: Any, paths: Sequence[str] | None, names: Sequence[str] | None,
               file: str | Path, max_images: int = 16, max_size: int = 1920) -> Path:
    """Write a mosaic of a batch with its boxes (`scaledyolo.drawing.tile_batch`; the same inputs)."""
    mosaic = tile_batch(imgs, targets, names, paths, max_images=max_images, max_size=max_size)
    return write_image(file, mosaic)
