"""`evolve.png`: each evolved hyper-parameter against fitness, one panel per key, the fittest marked."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from scaledyolo.files import atomic_path


def plot_evolution(csv_path: str | Path, keys: list[str], out: str | Path | None = None) -> Path:
    """Scatter of each of `keys` (columns of evolve.csv) against the generation's fitness."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv_path = Path(csv_path)
    out = Path(out) if out else csv_path.with_name("evolve.png")
    with open(csv_path, newline="") as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    fit = [r["fitness"] for r in rows]
    best = max(range(len(rows)), key=lambda i: fit[i])
    cols = 6
    fig, axes = plt.subplots(math.ceil(len(keys) / cols), cols, figsize=(2.6 * cols, 2.4 * math.ceil(len(keys) / cols)),
                             squeeze=False)
    for ax, key in zip(axes.flat, keys):
        values = [r[key] for r in rows]
        ax.scatter(values, fit, c=fit, cmap="viridis", s=12, alpha=0.8, edgecolors="none")
        ax.plot(values[best], fit[best], "k+", markersize=12)
        ax.set_title(f"{key} = {values[best]:.3g}", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.supylabel("fitness", fontsize=8)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out
