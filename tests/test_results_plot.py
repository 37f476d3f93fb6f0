"""results.png: train above val for each loss, one lr panel, smoothed lines beside the raw ones."""

from __future__ import annotations

import csv

import cv2
import numpy as np

from scaledyolo.train.plots import plot_results, results_layout, smooth

KEYS = ["epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "train/total_loss",
        "val/box_loss", "val/obj_loss", "val/cls_loss", "val/total_loss", "metrics/precision", "metrics/recall",
        "metrics/mAP50", "metrics/mAP50-95", "fitness", "lr/pg0", "lr/pg1", "lr/pg2", "time_s"]


def test_layout_puts_each_val_loss_under_its_train_loss_and_one_lr_panel():
    layout = results_layout(KEYS)
    for kind in ("box", "obj", "cls", "total"):
        assert (f"train/{kind}_loss", [f"train/{kind}_loss"]) in [top for top, _ in layout]
        top, bottom = next(c for c in layout if c[0][0] == f"train/{kind}_loss")
        assert bottom == (f"val/{kind}_loss", [f"val/{kind}_loss"])
    panels = [p for column in layout for p in column if p is not None]
    assert [p for p in panels if p[0] == "lr"] == [("lr", ["lr/pg0", "lr/pg1", "lr/pg2"])]
    drawn = sorted(k for p in panels for k in p[1])
    assert drawn == sorted(KEYS[1:])  # every column once, the epoch as the x axis
    # an older results.csv without validation losses: an empty panel under each training loss
    assert results_layout(["epoch", "train/box_loss", "lr/pg0"]) == [(("train/box_loss", ["train/box_loss"]), None),
                                                                     (("lr", ["lr/pg0"]), None)]


def test_smooth_keeps_constants_and_damps_noise():
    np.testing.assert_allclose(smooth(np.full(7, 0.25)), 0.25, rtol=1e-12)
    noisy = np.sin(np.linspace(0, 3, 200)) + np.random.default_rng(0).normal(0, 0.2, 200)
    smoothed = smooth(noisy)
    assert smoothed.shape == noisy.shape
    assert np.std(np.diff(smoothed)) < 0.2 * np.std(np.diff(noisy))
    with_gap = smooth(np.array([1.0, np.nan, 1.0, 1.0]))
    assert np.allclose(with_gap, 1.0)  # a missing epoch is skipped, not read as 0
    step = smooth(np.r_[np.zeros(10), np.ones(10)])
    assert np.all(np.diff(step) >= 0) and 0 < step[9] < 0.5 < step[10] < 1


def test_results_png_is_written(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=KEYS)
        writer.writeheader()
        for epoch in range(12):
            writer.writerow({k: epoch if k == "epoch" else f"{rng.random():.4f}" for k in KEYS})
    out = plot_results(path)
    assert out == tmp_path / "results.png"
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] > picture.shape[0] > 300 and picture.std() > 1
