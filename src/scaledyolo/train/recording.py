"""What each epoch leaves behind: its results row, `weights/last.pt`, `best.pt` on better fitness,
`epochN.pt` every `save_period` epochs, and the early-stopping decision (`patience`).

Fitness is the official 0.1 mAP50 + 0.9 mAP50-95. The files themselves (results.csv, JSON lines,
TensorBoard, plots) are written by the loggers (`train.loggers`), which read the rows kept here.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from scaledyolo.files import atomic_path
from scaledyolo.geometry import TRAINED_GEOMETRY
from scaledyolo.interop.checkpoint import save_checkpoint

VAL_LOSS_KEYS = ["val/box_loss", "val/obj_loss", "val/cls_loss", "val/total_loss"]  # validate's, with loss_fn
CSV_KEYS = ["epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "train/total_loss", *VAL_LOSS_KEYS,
            "metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95", "fitness",
            "lr/pg0", "lr/pg1", "lr/pg2", "time_s"]


def fitness(metrics: dict[str, float]) -> float:
    """The checkpoint-selection score: 0.1 mAP50 + 0.9 mAP50-95."""
    return 0.1 * float(metrics.get("map50", 0.0)) + 0.9 * float(metrics.get("map", 0.0))


def epoch_row(epoch: int, mloss: torch.Tensor, metrics: dict[str, float], lrs: list[float],
              seconds: float) -> dict[str, Any]:
    """One results.csv row (the CSV_KEYS) from the mean train losses and the validation metrics
    (validation losses 0 when there was no validation, like the metrics)."""
    return {"epoch": epoch, "train/box_loss": float(mloss[0]), "train/obj_loss": float(mloss[1]),
            "train/cls_loss": float(mloss[2]), "train/total_loss": float(mloss[3]),
            **{key: float(metrics.get(key, 0.0)) for key in VAL_LOSS_KEYS},
            "metrics/precision": float(metrics.get("precision", 0.0)),
            "metrics/recall": float(metrics.get("recall", 0.0)),
            "metrics/mAP50": float(metrics.get("map50", 0.0)), "metrics/mAP50-95": float(metrics.get("map", 0.0)),
            "fitness": fitness(metrics), **{f"lr/pg{j}": float(lr) for j, lr in enumerate(lrs)},
            "time_s": round(seconds, 2)}


def write_csv_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite results.csv from all rows so far (temp file + rename: never half a file)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_KEYS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in CSV_KEYS})


class EarlyStopping:
    """Stop when fitness has not improved for `patience` epochs (0: never stop early)."""

    def __init__(self, patience: int = 0) -> None:
        self.patience = int(patience)
        self.best_fitness = -1.0
        self.best_epoch = 0

    def __call__(self, epoch: int, fit: float) -> bool:
        """Record epoch `epoch`'s fitness; True when training should stop after it."""
        if fit > self.best_fitness:
            self.best_fitness, self.best_epoch = fit, epoch
        return self.patience > 0 and epoch - self.best_epoch >= self.patience


def save_epoch_weights(wdir: Path, model: Any, ema: Any, optimizer: Any, scaler: Any, epoch: int,
                       hyp: dict[str, float], row: dict[str, Any], state: dict[str, Any], trained: dict[str, Any],
                       improved: bool, save_period: int) -> list[Path]:
    """last.pt (full training state), best.pt when `improved`, epochN.pt every `save_period` epochs.

    `trained` is how the model was trained (image size, data YAML; commands default to these).
    Returns the files written.
    """
    last = wdir / "last.pt"
    save_checkpoint(last, model, ema=ema, optimizer=optimizer, epoch=epoch, hyp=hyp, metrics=row, extra=state,
                    scaler=scaler, geometry=TRAINED_GEOMETRY, **trained)
    written = [last]
    light = {"args": state["args"], "best_fitness": state["best_fitness"]}
    if improved:
        written.append(wdir / "best.pt")
    if save_period > 0 and (epoch + 1) % save_period == 0:
        written.append(wdir / f"epoch{epoch + 1}.pt")
    for path in written[1:]:
        save_checkpoint(path, model, ema=ema, epoch=epoch, hyp=hyp, metrics=row, extra=light,
                        geometry=TRAINED_GEOMETRY, **trained)
    return written
