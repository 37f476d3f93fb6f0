"""Training curves: `results.png`, one panel per results.csv column (batch mosaics are `scaledyolo.drawing`'s)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from scaledyolo.files import atomic_path


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
