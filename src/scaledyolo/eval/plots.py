"""Evaluation pictures: PR curve, confusion matrix, and a labelled batch mosaic (shared with training).

Everything renders off-screen (matplotlib's Agg backend, OpenCV for the mosaic) and is written
atomically, so it works on headless servers and never leaves half-written files.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

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


def class_color(c: int) -> tuple[int, int, int]:
    """A stable, distinct RGB colour per class index (golden-ratio hue steps)."""
    hue = int((c * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 220, 230]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


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
    """A mosaic of a batch with its boxes: the picture to check labels and predictions at a glance.

    imgs: (B, 3, H, W) RGB, uint8 or float 0-1 (tensor or array). targets: rows [image_index, class,
    cx, cy, w, h] (+ a score column for predictions), normalised 0-1 or in input pixels. Rows with a
    score below 0.25 are not drawn.
    """
    imgs = _to_numpy(imgs)
    if imgs.dtype != np.uint8:
        imgs = np.clip(imgs * (255.0 if imgs.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    targets = _to_numpy(targets).astype(np.float64)
    targets = targets.reshape(-1, targets.shape[-1]) if targets.size else np.zeros((0, 6))
    b = min(len(imgs), max_images)
    _, _, h, w = imgs.shape
    cols = math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    scale = min(1.0, max_size / max(cols * w, rows * h))
    th, tw = max(1, int(h * scale)), max(1, int(w * scale))
    mosaic = np.full((rows * th, cols * tw, 3), 255, dtype=np.uint8)
    normalised = len(targets) > 0 and targets[:, 2:6].max() <= 1.01
    font = max(0.3, min(tw, th) / 600)
    for i in range(b):
        y0, x0 = (i // cols) * th, (i % cols) * tw
        tile = cv2.resize(np.ascontiguousarray(imgs[i].transpose(1, 2, 0)), (tw, th), interpolation=cv2.INTER_AREA)
        tile = np.ascontiguousarray(tile)
        for row in targets[targets[:, 0] == i]:
            score = row[6] if len(row) > 6 else None
            if score is not None and score < 0.25:
                continue
            cx, cy, bw, bh = row[2:6] * ((w, h, w, h) if normalised else 1) * scale
            c = int(row[1])
            p1, p2 = (int(cx - bw / 2), int(cy - bh / 2)), (int(cx + bw / 2), int(cy + bh / 2))
            color = class_color(c)
            cv2.rectangle(tile, p1, p2, color, max(1, round(2 * scale)))
            name = names[c] if names is not None and 0 <= c < len(names) else str(c)
            text = name if score is None else f"{name} {score:.2f}"
            cv2.putText(tile, text, (p1[0], max(p1[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, font, color, 1, cv2.LINE_AA)
        if paths is not None and i < len(paths):
            cv2.putText(tile, Path(paths[i]).name[:40], (4, th - 6), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), 1,
                        cv2.LINE_AA)
        cv2.rectangle(tile, (0, 0), (tw - 1, th - 1), (255, 255, 255), 1)
        mosaic[y0:y0 + th, x0:x0 + tw] = tile
    ok, buf = cv2.imencode(Path(file).suffix or ".jpg", cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode a picture as {Path(file).suffix!r}")
    return atomic_write_bytes(file, buf.tobytes())


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
