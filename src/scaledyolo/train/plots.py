"""Training pictures: a labelled mosaic of the first training batches and the `results.png` curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from scaledyolo.files import atomic_path, atomic_write_bytes

PALETTE = [(255, 56, 56), (56, 56, 255), (56, 200, 56), (255, 157, 151), (255, 178, 29), (207, 210, 49),
           (72, 249, 10), (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168),
           (0, 194, 255), (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133)]


def _write_image_atomic(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(path.suffix or ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def plot_batch(imgs: torch.Tensor, targets: torch.Tensor, names: Sequence[str], path: str | Path,
               max_images: int = 16, max_side: int = 1280) -> Path:
    """Tile a batch (uint8 or 0-1 float, (B, 3, H, W) RGB) with its target boxes and class names."""
    path = Path(path)
    imgs = imgs[:max_images].detach().cpu().float()
    if imgs.max() <= 1.0:
        imgs = imgs * 255.0
    b, _, h, w = imgs.shape
    cols = math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    scale = min(1.0, max_side / (cols * max(h, w)))
    th, tw = int(h * scale), int(w * scale)
    canvas = np.full((rows * th, cols * tw, 3), 255, np.uint8)
    targets = targets.detach().cpu()
    for k in range(b):
        tile = np.ascontiguousarray(imgs[k].permute(1, 2, 0).clamp(0, 255).byte().numpy())
        tile = cv2.resize(tile, (tw, th)) if scale != 1.0 else tile.copy()
        for row in targets[targets[:, 0] == k]:
            cls, cx, cy, bw, bh = row[1:6].tolist()
            x1, y1 = int((cx - bw / 2) * tw), int((cy - bh / 2) * th)
            x2, y2 = int((cx + bw / 2) * tw), int((cy + bh / 2) * th)
            color = PALETTE[int(cls) % len(PALETTE)]
            cv2.rectangle(tile, (x1, y1), (x2, y2), color, 1)
            label = names[int(cls)] if int(cls) < len(names) else str(int(cls))
            cv2.putText(tile, label, (x1, max(y1 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1, cv2.LINE_AA)
        r, c = divmod(k, cols)
        canvas[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
        cv2.rectangle(canvas, (c * tw, r * th), ((c + 1) * tw - 1, (r + 1) * th - 1), (255, 255, 255), 1)
    _write_image_atomic(path, canvas)
    return path


def plot_results(csv_path: str | Path, out: str | Path | None = None) -> Path:
    """One small panel per numeric column of results.csv against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv_path = Path(csv_path)
    out = Path(out) if out else csv_path.with_name("results.png")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    epochs = [int(r["epoch"]) for r in rows]
    cols = 5
    nrows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 2.6 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        ax.plot(epochs, [float(r[key]) for r in rows], marker=".", linewidth=1.5)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out
