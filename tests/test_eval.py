"""Evaluation: our matcher agrees with pycocotools, COCO ids follow the --save-json rules, `val` end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import torch
import pytest

from scaledyolo.eval.coco import (COCO80_NAMES, COCO80_TO_91, category_id_map, coco_evaluate, ground_truth,
                                  image_id_from_path, is_coco80, labels_to_xyxy, results_json)
from scaledyolo.eval.metrics import ConfusionMatrix, ap_per_class, match_detections
from scaledyolo.eval.validate import score_predictions


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
    return score_predictions(preds, dataset.labels, dataset.shapes, nc)


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
    # the same predictions, the same rules: the same numbers (up to float summation order)
    assert abs(own.map - coco["map"]) <= 1e-9
    assert abs(own.map50 - coco["map50"]) <= 1e-9
    assert abs(own.map75 - coco["map75"]) <= 1e-9
    for c, row in enumerate(coco["per_class"]):
        assert abs(own.ap[c].mean() - row["ap"]) <= 1e-9


def single_image_case(gt_boxes, dets, nc=1):
    """One 100 x 100 image: ground-truth xyxy boxes (class 0) and detections (x1, y1, x2, y2, score, class)."""
    h = w = 100
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    lab = np.concatenate([np.zeros((len(gt), 1)), (gt[:, :2] + gt[:, 2:]) / 2 / w, (gt[:, 2:] - gt[:, :2]) / w], 1)
    dataset = SimpleNamespace(labels=[lab], shapes=[(h, w)], image_files=["000000.jpg"], image_ids=[0],
                              names=[f"c{i}" for i in range(nc)])
    return dataset, [np.asarray(dets, np.float64).reshape(-1, 6)]


def test_iou_exactly_one_half_is_a_match_as_in_pycocotools():
    """pycocotools matches at IoU >= threshold; IoU exactly 0.5 (50 / 100) counts at 0.5 and no higher."""
    dataset, preds = single_image_case([[0, 0, 10, 10]], [[0, 0, 10, 5, 0.9, 0]])
    _, tp = match_detections(preds[0], np.zeros(1), np.array([[0.0, 0.0, 10.0, 10.0]]))
    assert tp[0].tolist() == [True] + [False] * 9
    own = own_metrics(dataset, preds, 1)
    coco = coco_evaluate(ground_truth(dataset), results_json([0], preds, category_id_map(dataset.names)))
    assert coco["map50"] == pytest.approx(1.0) and own.map50 == pytest.approx(1.0)
    assert abs(own.map - coco["map"]) <= 1e-9 and own.map == pytest.approx(0.1)
    # a hair below 0.5: no match in either
    dataset, preds = single_image_case([[0, 0, 10, 10]], [[0, 0, 10, 4.999, 0.9, 0]])
    coco = coco_evaluate(ground_truth(dataset), results_json([0], preds, category_id_map(dataset.names)))
    assert coco["map50"] == 0.0 and own_metrics(dataset, preds, 1).map50 == 0.0


def test_101_point_ap_by_hand_where_11_point_differs():
    """9 ground truths, one detection, correct: recall 1/9 at precision 1, nothing beyond.
    101-point AP = (points 0.00..0.11: 12) / 101; 11-point (VOC07) would be (0.0, 0.1: 2) / 11."""
    ap101, ap11 = 12 / 101, 2 / 11
    assert ap11 - ap101 > 0.05
    result = ap_per_class(np.array([[True]]), np.array([0.9]), np.array([0]), np.zeros(9), nc=1)
    assert result.ap[0, 0] == pytest.approx(ap101, abs=1e-12)
    gt = [[10 * i, 0, 10 * i + 8, 8] for i in range(9)]
    dataset, preds = single_image_case(gt, [[0, 0, 8, 8, 0.9, 0]])
    coco = coco_evaluate(ground_truth(dataset), results_json([0], preds, category_id_map(dataset.names)))
    assert coco["map50"] == pytest.approx(ap101, abs=1e-9)
    # and a two-step envelope: TP, FP, TP over 4 ground truths -> precision 1 to recall 0.25, 2/3 to 0.5
    result = ap_per_class(np.array([[True], [False], [True]]), np.array([0.9, 0.8, 0.7]), np.zeros(3),
                          np.zeros(4), nc=1)
    assert result.ap[0, 0] == pytest.approx((26 * 1 + 25 * 2 / 3) / 101, abs=1e-12)


def test_tied_scores_keep_detection_order_as_pycocotools_does():
    """pycocotools sorts by score with a stable sort: among equal scores the earlier detection counts
    first, and AP depends on that order. 100 detections at 4 score levels, every other one correct."""
    rng = np.random.default_rng(0)
    conf = rng.integers(1, 5, 100) / 5.0
    tp = (np.arange(100) % 2 == 0)[:, None]
    result = ap_per_class(tp, conf, np.zeros(100), np.zeros(50), nc=1)
    order = np.argsort(-conf, kind="stable")
    hits = np.cumsum(tp[order, 0])
    recall, precision = hits / 50, hits / np.arange(1, 101)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    expected = np.mean([envelope[np.searchsorted(recall, r, side="left")] if r <= recall[-1] else 0.0
                        for r in np.linspace(0, 1, 101)])
    assert result.ap[0, 0] == pytest.approx(expected, abs=1e-12)


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


def test_no_detections_at_all_scores_zero():
    for tp in (np.zeros((0, 10), bool), np.zeros(0, bool)):
        r = ap_per_class(tp, np.zeros(0), np.zeros(0), np.array([0, 1, 1]), 3)
        assert r.ap.shape == (3, 10) and list(r.n_gt) == [1, 2, 0]
        assert r.map == r.map50 == r.map75 == r.mp == r.mr == 0.0


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


def test_confusion_matrix_accumulates_with_the_default_thresholds():
    """Counts add up over images; by default a pair matches above IoU 0.45 (0.5 does, 0.4 does not)."""
    cm = ConfusionMatrix(nc=2)
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    det = np.array([[0, 0, 10, 5, 0.3, 0], [20, 20, 30, 24, 0.9, 1], [70, 70, 80, 80, 0.2, 1]])  # IoU 0.5, 0.4
    for _ in range(2):
        cm.update(det, np.array([[0], [1]]), gt_boxes)  # classes as a column, as label arrays hold them
    assert cm.matrix[0, 0] == 2  # matched twice
    assert cm.matrix[2, 1] == 2 and cm.matrix[1, 2] == 2  # IoU 0.4: a miss and a false detection, twice
    assert cm.matrix.sum() == 6  # the 0.2-score detection is below the default conf 0.25


def test_match_detections_takes_ground_truth_classes_in_any_shape():
    det = np.array([[0, 0, 10, 10, 0.9, 1], [20, 20, 30, 30, 0.8, 0]])
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    flat = match_detections(det, np.array([1, 0]), gt_boxes)[1]
    column = match_detections(det, np.array([[1], [0]]), gt_boxes)[1]
    assert flat.all() and np.array_equal(flat, column)


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


# --------------------------------------------------------------------------- end to end


def pycocotools_direct(gt: dict, results_file) -> list[float]:
    """pycocotools on a ground-truth dict and a results JSON file, with no scaledyolo code involved."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(results_file)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats[:3]]


def yolo_txt_ground_truth(root, split: str, nc: int) -> dict:
    """COCO ground truth written straight from YOLO label files and image sizes (ids: the file stems)."""
    import cv2

    images, anns = [], []
    for img_file in sorted((root / "images" / split).glob("*.jpg")):
        h, w = cv2.imread(str(img_file)).shape[:2]
        images.append({"id": img_file.stem, "height": h, "width": w})
        for line in (root / "labels" / split / f"{img_file.stem}.txt").read_text().split("\n"):
            if line.strip():
                c, cx, cy, bw, bh = map(float, line.split())
                anns.append({"id": len(anns) + 1, "image_id": img_file.stem, "category_id": int(c), "iscrowd": 0,
                             "bbox": [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h], "area": bw * w * bh * h})
    return {"images": images, "annotations": anns, "categories": [{"id": i} for i in range(nc)]}


class Oracle(torch.nn.Module):
    """Replays prepared eval-mode outputs batch by batch: predictions we control, through the real pipeline."""

    def __init__(self, outputs: list, names: list[str]) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.outputs, self.names, self.num_classes = list(outputs), names, len(names)

    def forward(self, x):
        out = self.outputs.pop(0)
        assert out.shape[0] == x.shape[0]
        return out


def oracle_outputs(loader, nc: int, noise: float, seed: int = 0) -> list:
    """Eval-mode tensors made from each batch's targets: exact boxes (noise 0) or jittered ones with
    random scores, 20% missed, plus two false positives per image."""
    gen = torch.Generator().manual_seed(seed)
    outputs = []
    for imgs, targets, _, _ in loader:
        b, _, h, w = imgs.shape
        out = torch.zeros(b, 64, 5 + nc)
        for i in range(b):
            t = targets[targets[:, 0] == i]
            n = len(t)
            boxes = t[:, 2:6] * torch.tensor([w, h, w, h])
            score = torch.ones(n)
            if noise:
                boxes[:, :2] += torch.randn(n, 2, generator=gen) * noise * boxes[:, 2:]
                boxes[:, 2:] *= 1 + torch.randn(n, 2, generator=gen) * noise
                score = torch.rand(n, generator=gen) * 0.9 + 0.1
                score[torch.rand(n, generator=gen) < 0.2] = 0
                fp = torch.rand(2, 4, generator=gen) * torch.tensor([w, h, w / 3, h / 3])
                out[i, n:n + 2, :4], out[i, n:n + 2, 4] = fp, torch.rand(2, generator=gen)
                out[i, n:n + 2, 5] = 1
            out[i, :n, :4], out[i, :n, 4] = boxes, score
            out[i, torch.arange(n), 5 + t[:, 1].long()] = 1
        outputs.append(out)
    return outputs


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from scaledyolo.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, n_train=1, n_val=12, img_size=160, seed=1)
    return root


@pytest.mark.parametrize("noise", [0.0, 0.08])
def test_validate_saved_json_rescored_by_pycocotools_matches(synthetic_root, tmp_path, noise):
    from scaledyolo.data.loader import create_dataloader
    from scaledyolo.eval.validate import validate

    loader, dataset = create_dataloader(str(synthetic_root / "data.yaml"), "val", 128, 4, rect=True)
    model = Oracle(oracle_outputs(loader, dataset.nc, noise), dataset.names)
    result = validate(model, loader, dataset, names=dataset.names, save_json=tmp_path / "pred.json",
                      plots_dir=tmp_path / "plots", progress=False)
    direct = pycocotools_direct(yolo_txt_ground_truth(synthetic_root, "val", dataset.nc), tmp_path / "pred.json")
    assert [result["map"], result["map50"], result["map75"]] == pytest.approx(direct, abs=1e-9)  # pycocotools both
    # ours on the unrounded boxes, pycocotools on the JSON (boxes rounded to 1e-3 px, scores to 1e-5): the same
    # matches here, so equal to float rounding (1.1e-16 measured)
    assert [result["own"]["map"], result["own"]["map50"]] == pytest.approx(direct[:2], abs=1e-9)
    if noise == 0:
        assert result["map"] == pytest.approx(1.0, abs=1e-6)
    else:
        assert 0.2 < result["map"] < 0.95
    for name in ("PR_curve.png", "confusion_matrix.png", "val_batch0_labels.jpg", "val_batch0_pred.jpg"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
    saved = json.loads((tmp_path / "pred.json").read_text())
    assert {r["image_id"] for r in saved} <= {p.stem for p in (synthetic_root / "images" / "val").glob("*.jpg")}


@pytest.fixture(scope="module")
def raccoon(tmp_path_factory):
    """Four real raccoon images (Pascal VOC) and a random-weight yolov4-tiny checkpoint for one class."""
    import shutil
    from pathlib import Path

    import yaml

    from scaledyolo import build_model
    from scaledyolo.interop.checkpoint import save_checkpoint

    src = Path(__file__).parent / "fixtures" / "raccoon"
    root = tmp_path_factory.mktemp("raccoon")
    for sub in ("images", "annotations"):
        (root / sub).mkdir()
    for img in sorted((src / "images").glob("*.jpg"))[:4]:
        shutil.copy(img, root / "images" / img.name)
        shutil.copy(src / "annotations" / f"{img.stem}.xml", root / "annotations" / f"{img.stem}.xml")
    split = {"images": "images", "annotations": "annotations"}
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": split, "val": split,
                                                    "names": ["raccoon"]}))
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=1)
    model.names = ["raccoon"]
    save_checkpoint(root / "tiny.pt", model)
    return root


def voc_ground_truth(root) -> dict:
    """COCO ground truth straight from the VOC XML files (ids: the file stems)."""
    import xml.etree.ElementTree as ET

    images, anns = [], []
    for xml in sorted((root / "annotations").glob("*.xml")):
        tree = ET.parse(xml).getroot()
        stem = xml.stem
        images.append({"id": stem, "width": int(tree.find("size/width").text),
                       "height": int(tree.find("size/height").text)})
        for obj in tree.iter("object"):
            x1, y1, x2, y2 = (float(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax"))
            anns.append({"id": len(anns) + 1, "image_id": stem, "category_id": 0, "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    return {"images": images, "annotations": anns, "categories": [{"id": 0, "name": "raccoon"}]}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    from scaledyolo.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_val_cli_json_equals_pycocotools_on_its_saved_json(raccoon, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "val", "--weights", raccoon / "tiny.pt", "--data", raccoon / "data.yaml",
                           "--img", 128, "--batch", 4, "--json", "--save-json", tmp_path / "pred.json",
                           "--device", "cpu")
    assert code == 0
    report = json.loads(out)
    assert report["images"] == 4 and report["labels"] >= 4
    for key in ("map", "map50", "map75"):
        assert 0.0 <= report[key] <= 1.0
    saved = json.loads((tmp_path / "pred.json").read_text())
    assert saved and {r["category_id"] for r in saved} == {0}
    assert {r["image_id"] for r in saved} <= {p.stem for p in (raccoon / "images").glob("*.jpg")}
    direct = pycocotools_direct(voc_ground_truth(raccoon), tmp_path / "pred.json")
    assert [report["map"], report["map50"], report["map75"]] == pytest.approx(direct, abs=1e-9)


def test_val_cli_table_tta_and_plots(raccoon, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "val", "--weights", raccoon / "tiny.pt", "--data", raccoon / "data.yaml",
                           "--img", 128, "--tta", "--plots", tmp_path / "plots", "--device", "cpu")
    assert code == 0
    assert "mAP50-95" in out and "raccoon" in out and "AP small" in out
    assert (tmp_path / "plots" / "PR_curve.png").is_file() and (tmp_path / "plots" / "confusion_matrix.png").is_file()


def test_val_cli_subnet_runs_on_fewer_levels(raccoon, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "val", "--weights", raccoon / "tiny.pt", "--data", raccoon / "data.yaml",
                           "--img", 128, "--subnet", "p5-p5", "--json", "--save-json", tmp_path / "sub.json",
                           "--device", "cpu")
    assert code == 0 and json.loads(out)["subnet"] == "p5-p5"
    assert all(0.0 <= json.loads(out)[k] <= 1.0 for k in ("map", "map50", "map75"))


def test_val_cli_class_count_mismatch_is_a_one_line_error(raccoon, tmp_path, capsys):
    import yaml

    data = yaml.safe_load((raccoon / "data.yaml").read_text())
    data["names"] = ["raccoon", "dog"]
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(data))
    code, _, err = run_cli(capsys, "val", "--weights", raccoon / "tiny.pt", "--data", tmp_path / "two.yaml",
                           "--img", 128, "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "classes" in err


def test_coco_layout_keeps_original_ids_and_excuses_crowd_regions(tmp_path):
    """COCO layout: saved ids are the annotation file's, and pycocotools scores against that file, so a
    detection on a crowd region (which training leaves out) is not a false positive."""
    import shutil
    from pathlib import Path

    import cv2
    import yaml

    from scaledyolo.data.loader import create_dataloader
    from scaledyolo.eval.validate import validate

    src = Path(__file__).parent / "fixtures" / "raccoon"
    (tmp_path / "images").mkdir()
    images, anns = [], []
    for i, xml in enumerate(sorted((src / "annotations").glob("*.xml"))[:4]):
        shutil.copy(src / "images" / f"{xml.stem}.jpg", tmp_path / "images")
        h, w = cv2.imread(str(src / "images" / f"{xml.stem}.jpg")).shape[:2]
        images.append({"id": 100 + i, "file_name": f"{xml.stem}.jpg", "width": w, "height": h})
        for ann in voc_ground_truth(src)["annotations"]:
            if ann["image_id"] == xml.stem:
                anns.append({**ann, "id": len(anns) + 1, "image_id": 100 + i, "category_id": 7})
    anns.append({"id": 999, "image_id": 100, "category_id": 7, "bbox": [0, 0, 40, 40], "iscrowd": 1})
    cats = [{"id": 7, "name": "raccoon"}, {"id": 3, "name": "dog"}]
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    split = {"images": "images", "annotations": "ann.json"}
    (tmp_path / "coco.yaml").write_text(yaml.safe_dump({"path": str(tmp_path), "train": split, "val": split}))

    loader, dataset = create_dataloader(str(tmp_path / "coco.yaml"), "val", 128, 4, rect=True)
    outputs = oracle_outputs(loader, dataset.nc, noise=0.0)
    raccoon_class = dataset.names.index("raccoon")
    for out, (_, _, paths, shapes) in zip(outputs, loader):
        out[..., 4] *= 0.9  # true boxes score 0.9; the crowd detection below scores 1.0
        for j, (path, shape) in enumerate(zip(paths, shapes)):
            if dataset.image_ids[dataset.image_files.index(path)] == 100:
                (gain, _), (padw, padh) = shape[1]
                out[j, -1, :5] = torch.tensor([20 * gain + padw, 20 * gain + padh, 40 * gain, 40 * gain, 1.0])
                out[j, -1, 5 + raccoon_class] = 1
    result = validate(Oracle(outputs, dataset.names), loader, dataset, save_json=tmp_path / "pred.json",
                      progress=False)
    saved = json.loads((tmp_path / "pred.json").read_text())
    assert {r["image_id"] for r in saved} == {100, 101, 102, 103} and {r["category_id"] for r in saved} == {7}
    assert result["map"] == pytest.approx(1.0, abs=1e-6)
    assert result["own"]["map"] < 1.0  # our matcher has no crowd regions: the crowd detection counts against it
