"""The best-F1 operating point: the F1 curve over confidence thresholds is F1 = 2PR / (P + R) of the
detections at or above each threshold, computed by hand here."""

from __future__ import annotations

import numpy as np

from scaledyolo.eval.metrics import CONF_POINTS, IOU_THRESHOLDS, ap_per_class


def test_f1_curve_at_each_detection_threshold_is_the_hand_value():
    # four detections of one class at confidences that are exact points of the curve; 4 ground truths
    at = [900, 700, 500, 300]
    conf = CONF_POINTS[at]
    hits = np.array([1, 0, 1, 1], dtype=bool)
    tp = np.repeat(hits[:, None], len(IOU_THRESHOLDS), 1)
    result = ap_per_class(tp, conf, np.zeros(4), np.zeros(4), nc=1)
    # top-k precision / recall: k=1: 1, 1/4; k=2: 1/2, 1/4; k=3: 2/3, 2/4; k=4: 3/4, 3/4
    precision = np.array([1, 1 / 2, 2 / 3, 3 / 4])
    recall = np.array([1 / 4, 1 / 4, 2 / 4, 3 / 4])
    f1 = 2 * precision * recall / (precision + recall)
    np.testing.assert_allclose(result.f1_curve[at], f1, rtol=0, atol=1e-9)
    # the chosen point is a point of the curve, and its F1 is that of its own precision and recall
    p, r = result.precision[0], result.recall[0]
    np.testing.assert_allclose(result.f1[0], 2 * p * r / (p + r), rtol=0, atol=1e-12)
    # below the lowest confidence every detection counts: P = R = 3/4
    assert result.best_conf <= CONF_POINTS[300] + 0.05
    np.testing.assert_allclose(result.f1_curve[:300], 0.75, rtol=0, atol=1e-9)
