"""Our per-epoch matcher against pycocotools on a COCO-sized synthetic case: agreement and time.

    python benchmarks/eval_matcher.py [--images 5000] [--classes 80] [--dets 100]

Predictions are jittered ground-truth boxes with random scores, missed boxes, wrong classes and
false positives, so every code path of the matching is exercised. Prints map/map50/map75 from both
and the seconds each took (shared machines make the times noisy).
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np

from scaledyolo.eval.coco import category_id_map, coco_evaluate, ground_truth, labels_to_xyxy, results_json
from scaledyolo.eval.validate import score_predictions


def make_case(n_images: int, nc: int, n_fp: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels, shapes, preds = [], [], []
    for _ in range(n_images):
        h, w = int(rng.integers(300, 640)), int(rng.integers(300, 640))
        n = int(rng.integers(1, 15))
        bw, bh = rng.uniform(0.02, 0.6, n), rng.uniform(0.02, 0.6, n)
        lab = np.stack([rng.integers(0, nc, n), rng.uniform(bw / 2, 1 - bw / 2), rng.uniform(bh / 2, 1 - bh / 2),
                        bw, bh], 1)
        cls, boxes = labels_to_xyxy(lab, (h, w))
        jitter = boxes + rng.normal(0, 0.08, boxes.shape) * np.tile(boxes[:, 2:] - boxes[:, :2], 2)
        pred_cls = np.where(rng.random(n) < 0.1, rng.integers(0, nc, n), cls)
        hits = np.concatenate([jitter, rng.random((n, 1)), pred_cls[:, None]], 1)[rng.random(n) > 0.15]
        xy = rng.uniform(0, 1, (n_fp, 2)) * [w, h]
        fps = np.concatenate([xy, xy + rng.uniform(5, 200, (n_fp, 2)), rng.random((n_fp, 1)) * 0.5,
                              rng.integers(0, nc, (n_fp, 1))], 1)
        labels.append(lab)
        shapes.append((h, w))
        preds.append(np.concatenate([hits, fps]))
    ds = SimpleNamespace(labels=labels, shapes=shapes, image_files=[f"{i:012d}.jpg" for i in range(n_images)],
                         image_ids=list(range(n_images)), names=[f"c{i}" for i in range(nc)])
    return ds, preds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--dets", type=int, default=100, help="false positives per image")
    args = ap.parse_args()
    ds, preds = make_case(args.images, args.classes, args.dets)
    results = results_json(ds.image_ids, preds, category_id_map(ds.names))
    t = time.perf_counter()
    coco = coco_evaluate(ground_truth(ds), results)
    t_coco = time.perf_counter() - t
    t = time.perf_counter()
    own = score_predictions(preds, ds.labels, ds.shapes, args.classes)
    t_own = time.perf_counter() - t
    print(f"{args.images} images, {args.classes} classes, {sum(map(len, preds))} detections")
    print(f"{'':12}{'map':>8}{'map50':>8}{'map75':>8}{'seconds':>9}")
    print(f"{'pycocotools':12}{coco['map']:8.4f}{coco['map50']:8.4f}{coco['map75']:8.4f}{t_coco:9.1f}")
    print(f"{'ours':12}{own.map:8.4f}{own.map50:8.4f}{own.map75:8.4f}{t_own:9.1f}")


if __name__ == "__main__":
    main()
