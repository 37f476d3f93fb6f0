"""Training curves: `results.png` from results.csv (batch mosaics are `scaledyolo.drawing`'s).

Each loss is a column of two panels, the training loss above the validation loss on one y scale,
so a validation loss that turns up while the training loss still falls (overfitting) shows at a
glance. Every series is drawn raw (dots) with a Gaussian-smoothed line over it, as users know
from ultralytics' results.png; the learning rates of all parameter groups share one panel.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

import numpy as np

from scaledyolo.files import atomic_path

Panel = tuple[str, list[str]]  # title, the results.csv columns drawn in it
SMOOTH_SIGMA = 3.0  # epochs


def smooth(values: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """A Gaussian-weighted moving average of a series (same length; NaNs skipped).

    Near the ends the kernel is renormalised over the samples that exist, so the curve neither
    sags towards zero nor is cut short; a constant series stays constant.
    """
    y = np.asarray(values, dtype=np.float64)
    n = len(y)
    if n == 0 or sigma <= 0:
        return y.copy()
    offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
    weights = np.exp(-0.5 * (offsets / sigma) ** 2) * (np.abs(offsets) <= 4 * sigma)
    valid = ~np.isnan(y)
    weights = weights * valid[None, :]
    total = weights.sum(1)
    out = np.full(n, np.nan)
    np.divide(weights @ np.where(valid, y, 0.0), total, out=out, where=total > 0)
    return out


def results_layout(keys: list[str]) -> list[tuple[Optional[Panel], Optional[Panel]]]:
    """The columns of results.png, each (top panel, bottom panel).

    train/X above val/X for every training series (an empty bottom panel when results.csv has no
    val/X); every other column gets a panel of its own, two per column in results.csv order; one
    panel "lr" holding every lr/* column comes last.
    """
    keys = [k for k in keys if k != "epoch"]
    lr = [k for k in keys if k.startswith("lr/")]
    used = set(lr)
    columns: list[tuple[Optional[Panel], Optional[Panel]]] = []
    for key in keys:
        if key.startswith("train/"):
            val = "val/" + key[len("train/"):]
            columns.append(((key, [key]), (val, [val]) if val in keys else None))
            used |= {key, val}
    singles: list[Panel] = [(k, [k]) for k in keys if k not in used]
    if lr:
        singles.append(("lr", lr))
    for i in range(0, len(singles), 2):
        columns.append((singles[i], singles[i + 1] if i + 1 < len(singles) else None))
    return columns


def _read_columns(csv_path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = list(rows[0]) if rows else []
    columns = {k: np.array([_number(r.get(k)) for r in rows]) for k in keys}
    epochs = columns.pop("epoch", np.arange(len(rows), dtype=np.float64))
    return epochs, columns


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def plot_results(csv_path: str | Path, out: str | Path | None = None) -> Path:
    """Write results.png (beside results.csv unless `out`): see the module docstring for the layout."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    csv_path = Path(csv_path)
    out = Path(out) if out else csv_path.with_name("results.png")
    epochs, columns = _read_columns(csv_path)
    layout = results_layout(["epoch", *columns])
    ncols = max(1, len(layout))
    fig, axes = plt.subplots(2, ncols, figsize=(3 * ncols, 5.4), squeeze=False)
    for j, column in enumerate(layout):
        for i, panel in enumerate(column):
            ax = axes[i, j]
            if panel is None:
                ax.axis("off")
                continue
            title, keys = panel
            if len(keys) > 1 or title == "lr":
                for key in keys:
                    ax.plot(epochs, columns[key], marker=".", linewidth=1.5, label=key.split("/")[-1])
                ax.legend(fontsize=7)
            else:
                values = columns[keys[0]]
                ax.plot(epochs, values, marker=".", linewidth=1.5, label="results")
                ax.plot(epochs, smooth(values), ":", linewidth=2, label="smooth")
            ax.set_title(title, fontsize=9)
            ax.tick_params(labelsize=7)
        if all(panel is not None and len(panel[1]) == 1 and panel[1][0].endswith("_loss") for panel in column):
            axes[1, j].sharey(axes[0, j])  # train and val loss on one scale: the gap is the point
    if layout and layout[0][0] is not None:
        axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out
