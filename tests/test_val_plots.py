"""Validation pictures: confusion counts and confidence curves against hand computations, the files
`validate(plots_dir=...)` writes, and labels.jpg."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scaledyolo.eval.metrics import CONF_POINTS, IOU_THRESHOLDS, ConfusionMatrix, ap_per_class
from synthetic_splits import synthetic_val_split


def test_confusion_matrix_against_a_hand_built_example():
    """Rows predicted, columns true, index 2 = background; conf 0.25 and IoU 0.45 as ultralytics."""
    cm = ConfusionMatrix(nc=2)
    assert (cm.conf, cm.iou) == (0.25, 0.45)
    # A: a hit, a class-1 box called class 0, a detection on background, a class-1 box only found below conf.
    cm.update(np.array([[0, 0, 10, 10, 0.9, 0], [21, 21, 40, 40, 0.8, 0], [200, 200, 210, 210, 0.7, 1],
                        [100, 100, 120, 120, 0.2, 1]]),
              np.array([0, 1, 1]), np.array([[0, 0, 10, 10], [20, 20, 40, 40], [100, 100, 120, 120]], float))
    cm.update(np.array([[0, 0, 5, 5, 0.5, 0]]), np.zeros(0), np.zeros((0, 4)))  # B: no ground truth
    cm.update(np.zeros((0, 6)), np.array([0]), np.array([[0, 0, 10, 10]], float))  # C: nothing detected
    # D: two detections of one box: the better-overlapping one matches, the other is a background FP.
    cm.update(np.array([[0, 0, 10, 9, 0.9, 1], [0, 0, 10, 10, 0.6, 1]]), np.array([1]),
              np.array([[0, 0, 10, 10]], float))
    expected = np.array([[1, 1, 1],   # predicted 0: true 0 (A), true 1 (A, wrong class), background (B)
                         [0, 1, 2],   # predicted 1: true 1 (D), background (A, D's duplicate)
                         [1, 1, 0]])  # missed: true 0 (C), true 1 (A's low-score box)
    np.testing.assert_array_equal(cm.matrix, expected)


def _hand_precision(t: float) -> float:
    # detections 0.9 TP, 0.8 TP, 0.3 FP, 0.2 FP of 2 boxes: P 1, 1, 2/3, 1/2, linear between the scores
    if t >= 0.8:
        return 1.0
    if t >= 0.3:
        return 1 - (0.8 - t) / 0.5 * (1 / 3)
    if t >= 0.2:
        return 2 / 3 - (0.3 - t) / 0.1 * (1 / 6)
    return 0.5


def _hand_recall(t: float) -> float:
    # R 0.5, 1, 1, 1 at the same scores; 0 above the best score
    if t > 0.9:
        return 0.0
    if t >= 0.8:
        return 0.5 + (0.9 - t) / 0.1 * 0.5
    return 1.0


def test_confidence_curves_and_best_f1_against_a_hand_computation():
    tp = np.zeros((4, len(IOU_THRESHOLDS)), dtype=bool)
    tp[[0, 2]] = True  # the 0.9 and 0.8 detections
    r = ap_per_class(tp, np.array([0.9, 0.3, 0.8, 0.2]), np.zeros(4), np.zeros(2), nc=2)
    p_hand = np.array([_hand_precision(t) for t in CONF_POINTS])
    r_hand = np.array([_hand_recall(t) for t in CONF_POINTS])
    np.testing.assert_allclose(r.p_curves[0], p_hand, atol=1e-9)
    np.testing.assert_allclose(r.r_curves[0], r_hand, atol=1e-9)
    np.testing.assert_allclose(r.f1_curves[0], 2 * p_hand * r_hand / (p_hand + r_hand + 1e-16), atol=1e-9)
    assert not r.p_curves[1].any() and not r.r_curves[1].any()  # class 1: no ground truth, no curve
    # Raw F1 peaks at 0.8 (P = R = 1). The reported point is the peak of F1 box-filtered over 51 samples
    # (h = 25/999 each side): where F1(c - h) = F1(c + h), i.e. P(c - h) = R(c + h) with P = 1, R = 1:
    # (0.8 - c + h) / 1.5 = 5 (c + h - 0.8)  ->  c = 0.8 - h * 6.5 / 8.5 = 0.78086.
    assert abs(CONF_POINTS[r.f1_curves[0].argmax()] - 0.8) < 1.5e-3
    h = 25 / 999
    assert r.best_conf == pytest.approx(0.8 - h * 6.5 / 8.5, abs=1.5e-3)
    assert r.precision[0] == pytest.approx(_hand_precision(r.best_conf), abs=1e-3) and r.recall[0] == 1.0


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    return synthetic_val_split(tmp_path_factory.mktemp("val_plots"), seed=5)


def _picture(path):
    picture = cv2.imread(str(path))
    assert picture is not None, path
    return picture


def test_validate_writes_the_curves_matrices_and_batch_pictures(val_split, tmp_path):
    import torch

    from scaledyolo.eval.validate import validate
    from scaledyolo.models.yolo import build_model

    loader, dataset = val_split
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=dataset.nc).eval()
    result = validate(model, loader, dataset, names=dataset.names, coco=False, progress=False,
                      plots_dir=tmp_path / "plots")
    names = ["PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png",
             "confusion_matrix_normalized.png"] + [f"val_batch{i}_{kind}.jpg" for i in range(3)
                                                   for kind in ("labels", "pred")]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(names)  # 5 images: 3 batches
    for name in names:
        picture = _picture(tmp_path / "plots" / name)
        assert picture.shape[0] > 100 and picture.std() > 1
    assert not np.array_equal(_picture(tmp_path / "plots" / "confusion_matrix.png"),
                              _picture(tmp_path / "plots" / "confusion_matrix_normalized.png"))
    assert np.asarray(result["confusion_matrix"]).shape == (dataset.nc + 1, dataset.nc + 1)


def test_plot_labels(tmp_path):
    from scaledyolo.eval.plots import plot_labels

    rng = np.random.default_rng(0)
    labels = [np.column_stack([rng.integers(0, 3, n), rng.uniform(0.2, 0.8, (n, 2)), rng.uniform(0.05, 0.4, (n, 2))])
              for n in (4, 0, 7)]
    out = plot_labels(labels, ["cat", "dog", "bird"], tmp_path / "labels.jpg")
    assert out == tmp_path / "labels.jpg"
    picture = _picture(out)
    assert picture.shape[0] > 500 and picture.std() > 1
    empty = _picture(plot_labels([np.zeros((0, 5))], ["cat"], tmp_path / "empty.jpg"))  # nothing labelled yet
    assert empty.shape == picture.shape and not np.array_equal(empty, picture)
