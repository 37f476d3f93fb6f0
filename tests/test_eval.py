"""Evaluation: our matcher agrees with pycocotools, COCO ids follow the --save-json rules, `val` end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from scaledyolo.eval.coco import (COCO80_NAMES, COCO80_TO_91, category_id_map, coco_evaluate, ground_truth,
                                  image_id_from_path, is_coco80, labels_to_xyxy, results_json)
from scaledyolo.eval.metrics import ConfusionMatrix, ap_per_class, match_detections


def synthetic_case(seed: int = 0, n_images: int = 40, nc: int = 5):
    """Ground truth of random boxes, and predictions made from it: jittered boxes with random scores,
    some misses, some wrong classes, some duplicates and some pure false positives."""
    rng = np.random.default_rng(seed)
    labels, shapes, preds = [], [], []
    for _ in range(n_images):
        h, w = int(rng.integers(200, 640)), int(rng.integers(200, 640))
        n = int(rng.integers(0, 9))
        bw, bh = rng.uniform(0.02, 0.6, n), rng.uniform(0.02, 0.6, n)
        lab = np.stack([rng.integers(0, nc, n), rng.uniform(bw / 2, 1 - bw / 2), rng.uniform(bh / 2, 1 - bh / 2),
                        bw, bh], 1) if n else np.zeros((0, 5))
        cls, boxes = labels_to_xyxy(lab, (h, w))
        size = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
        jittered = boxes + rng.normal(0, 0.08, boxes.shape) * size
        pred_cls = np.where(rng.random(n) < 0.1, rng.integers(0, nc, n), cls)
        hits = np.concatenate([jittered, rng.random((n, 1)), pred_cls[:, None]], 1)[rng.random(n) > 0.15]
        dups = hits[rng.random(len(hits)) < 0.2].copy()
        dups[:, :4] += rng.normal(0, 0.05, (len(dups), 4)) * 50
        dups[:, 4] *= 0.5
        k = int(rng.integers(0, 5))
        xy = rng.uniform(0, 1, (k, 2)) * [w, h]
        fps = np.concatenate([xy, xy + rng.uniform(5, 150, (k, 2)), rng.random((k, 1)) * 0.7,
                              rng.integers(0, nc, (k, 1))], 1)
        labels.append(lab)
        shapes.append((h, w))
        preds.append(np.concatenate([hits, dups, fps]))
    dataset = SimpleNamespace(labels=labels, shapes=shapes, image_files=[f"{i:06d}.jpg" for i in range(n_images)],
                              image_ids=list(range(n_images)), names=[f"class{i}" for i in range(nc)])
    return dataset, preds


def own_metrics(dataset, preds, nc):
    tps, confs, classes, targets = [], [], [], []
    for det, lab, shape in zip(preds, dataset.labels, dataset.shapes):
        gt_cls, gt_boxes = labels_to_xyxy(lab, shape)
        kept, tp = match_detections(det, gt_cls, gt_boxes)
        tps.append(tp[kept])
        confs.append(det[kept, 4])
        classes.append(det[kept, 5])
        targets.append(gt_cls)
    return ap_per_class(np.concatenate(tps), np.concatenate(confs), np.concatenate(classes),
                        np.concatenate(targets), nc)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matcher_agrees_with_pycocotools(seed):
    nc = 5
    dataset, preds = synthetic_case(seed, nc=nc)
    results = results_json(dataset.image_ids, preds, category_id_map(dataset.names))
    # Score the predictions exactly as they were written (rounded), as `val` does.
    rounded = [np.array([[*r["bbox"][:2], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3], r["score"],
                          r["category_id"]] for r in results if r["image_id"] == i]).reshape(-1, 6)
               for i in dataset.image_ids]
    coco = coco_evaluate(ground_truth(dataset), results)
    own = own_metrics(dataset, rounded, nc)
    assert 0.1 < coco["map"] < 0.9  # a realistic, non-degenerate case
    assert abs(own.map - coco["map"]) <= 0.005
    assert abs(own.map50 - coco["map50"]) <= 0.005
    assert abs(own.map75 - coco["map75"]) <= 0.005
    for c, row in enumerate(coco["per_class"]):
        assert abs(own.ap[c].mean() - row["ap"]) <= 0.01


def test_perfect_predictions_score_one_in_both():
    dataset, _ = synthetic_case(3)
    preds = []
    for lab, shape in zip(dataset.labels, dataset.shapes):
        cls, boxes = labels_to_xyxy(lab, shape)
        preds.append(np.concatenate([boxes, np.ones((len(cls), 1)), cls[:, None]], 1))
    coco = coco_evaluate(ground_truth(dataset), results_json(dataset.image_ids, preds, category_id_map(dataset.names)))
    own = own_metrics(dataset, preds, len(dataset.names))
    assert coco["map"] == pytest.approx(1.0) and coco["map50"] == pytest.approx(1.0)
    assert own.map == pytest.approx(1.0) and own.mp == pytest.approx(1.0) and own.mr == pytest.approx(1.0)


def test_detections_beyond_100_per_class_are_not_counted():
    gt_boxes = np.array([[0, 0, 10, 10]], dtype=float)
    det = np.array([[50, 50, 60, 60, 0.9 - i * 1e-3, 0] for i in range(100)] + [[0, 0, 10, 10, 0.1, 0]])
    kept, tp = match_detections(det, np.array([0]), gt_boxes)
    assert kept.sum() == 100 and not kept[-1] and not tp[kept].any()


def test_matching_prefers_higher_scores_and_one_match_per_ground_truth():
    gt = np.array([[0, 0, 100, 100]], dtype=float)
    det = np.array([[0, 0, 100, 90, 0.5, 0], [0, 0, 100, 100, 0.4, 0]])
    _, tp = match_detections(det, np.array([0]), gt)
    assert tp[0, 0] and not tp[1, 0]  # 0.5 IoU threshold: the higher-scoring one takes the box
    assert not tp[0, -1] and tp[1, -1]  # at 0.95 only the exact box matches, so it takes it


def test_confusion_matrix_counts():
    cm = ConfusionMatrix(nc=2, conf=0.25, iou=0.45)
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], dtype=float)
    det = np.array([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.9, 0], [80, 80, 90, 90, 0.9, 1],
                    [50, 50, 60, 60, 0.1, 1]])
    cm.update(det, np.array([0, 1, 1]), gt_boxes)
    m = cm.matrix
    assert m[0, 0] == 1 and m[0, 1] == 1  # right class; class 1 box called class 0
    assert m[2, 1] == 1  # the low-score detection is ignored: its box is missed
    assert m[1, 2] == 1  # a detection on background
    assert m.sum() == 4


def test_image_and_category_id_rules():
    assert image_id_from_path("/data/images/000000397133.jpg") == 397133
    assert image_id_from_path("raccoon-12.jpg") == "raccoon-12"
    assert category_id_map(["a", "b", "c"]) == [0, 1, 2]
    assert category_id_map(["a", "b"], [5, 9]) == [5, 9]
    assert category_id_map(COCO80_NAMES) == COCO80_TO_91
    darknet = list(COCO80_NAMES)
    darknet[3], darknet[4], darknet[57], darknet[62] = "motorbike", "aeroplane", "sofa", "tvmonitor"
    assert is_coco80(darknet) and not is_coco80(COCO80_NAMES[::-1])
    assert len(set(COCO80_TO_91)) == 80 and max(COCO80_TO_91) == 90


def test_ground_truth_is_in_original_pixels_and_string_ids_work():
    dataset = SimpleNamespace(labels=[np.array([[1, 0.5, 0.5, 0.5, 0.25]]), np.zeros((0, 5))],
                              shapes=[(100, 200), (50, 50)], image_files=["a.jpg", "17.jpg"],
                              image_ids=["a", 17], names=["x", "y"])
    gt = ground_truth(dataset)
    (ann,) = gt["annotations"]
    assert ann["bbox"] == [50.0, 37.5, 100.0, 25.0] and ann["category_id"] == 1 and ann["image_id"] == "a"
    assert [img["id"] for img in gt["images"]] == ["a", 17]
    stats = coco_evaluate(gt, [{"image_id": "a", "category_id": 1, "bbox": [50, 37.5, 100, 25], "score": 0.9}])
    assert stats["map"] == pytest.approx(1.0)


def test_plots_are_written(tmp_path):
    from scaledyolo.eval.metrics import RECALL_POINTS
    from scaledyolo.eval.plots import plot_batch, plot_confusion_matrix, plot_pr_curve

    dataset, preds = synthetic_case(4, n_images=10, nc=3)
    own = own_metrics(dataset, preds, 3)
    plot_pr_curve(RECALL_POINTS, own.pr_curves, own.ap[:, 0], dataset.names, tmp_path / "pr.png", own.present)
    cm = ConfusionMatrix(3)
    for det, lab, shape in zip(preds, dataset.labels, dataset.shapes):
        cm.update(det, *labels_to_xyxy(lab, shape))
    plot_confusion_matrix(cm.matrix, dataset.names, tmp_path / "cm.png")
    imgs = np.random.default_rng(0).integers(0, 255, (3, 3, 64, 96), dtype=np.uint8)
    targets = np.array([[0, 1, 0.5, 0.5, 0.4, 0.3], [2, 0, 0.2, 0.3, 0.1, 0.1]])
    plot_batch(imgs, targets, ["a.jpg", "b.jpg", "c.jpg"], dataset.names, tmp_path / "batch.jpg")
    import cv2

    for name in ("pr.png", "cm.png", "batch.jpg"):
        picture = cv2.imread(str(tmp_path / name))
        assert picture is not None and picture.shape[0] > 50 and picture.std() > 1
    assert not list(tmp_path.glob(".*tmp"))
