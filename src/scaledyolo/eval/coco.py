"""COCO-format ground truth and results, and the headline metrics computed by pycocotools.

The figures a user reads (`scaledyolo val`) come from pycocotools, the reference every paper
reports against; our own matcher (`scaledyolo.eval.metrics`) only serves per-epoch validation and
is tested to agree with it. Ids follow `--save-json`: an image id is int(stem) when the file stem is
numeric, else the stem; a category id is the original id for COCO-layout data, the COCO-91 id when
the class names are the 80 COCO classes, else the class index.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scaledyolo.classes import COCO80_NAMES
from scaledyolo.ops.boxes import xywh2xyxy

# The ids of COCO80_NAMES in the 91-id numbering of the COCO annotation files (ids 12, 26, 29, 30, 45, 66, 68,
# 69, 71, 83 are unused).
COCO80_TO_91 = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
]
# Spellings of the same classes in darknet's coco.names and other common lists.
_ALIASES = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch", "tvmonitor": "tv",
            "hairdryer": "hairdrier"}


def _canonical(name: str) -> str:
    key = "".join(ch for ch in str(name).lower() if ch.isalnum())
    return _ALIASES.get(key, key)


def is_coco80(names: Sequence[str]) -> bool:
    """True when `names` are the 80 COCO classes in the standard order (any common spelling)."""
    return len(names) == 80 and all(_canonical(a) == _canonical(b) for a, b in zip(names, COCO80_NAMES))


def category_id_map(names: Sequence[str], category_ids: Sequence[int] | None = None) -> list[int]:
    """Class index -> category id written to COCO JSON (original ids, COCO-91 ids, or the index)."""
    if category_ids is not None:
        if len(category_ids) != len(names):
            raise ValueError(f"{len(category_ids)} category ids for {len(names)} classes")
        return [int(c) for c in category_ids]
    if is_coco80(names):
        return list(COCO80_TO_91)
    return list(range(len(names)))


def image_id_from_path(path: str | Path) -> int | str:
    """The `--save-json` image id: int(stem) when the stem is numeric, else the stem."""
    stem = Path(path).stem
    return int(stem) if stem.isascii() and stem.isdigit() else stem


def dataset_image_ids(dataset: Any) -> list[int | str]:
    """The `--save-json` image ids of a dataset's images, in its order.

    COCO-layout splits keep the annotation file's ids (`dataset.image_ids`); every other layout
    uses `image_id_from_path`. Files whose stems collide get "folder/stem" ids so that no two
    images share an id.
    """
    if annotation_file(dataset) is not None:
        return list(dataset.image_ids)
    ids = [image_id_from_path(f) for f in dataset.image_files]
    if len(set(ids)) < len(ids):
        counts = Counter(ids)
        ids = [f"{Path(f).parent.name}/{Path(f).stem}" if counts[i] > 1 else i
               for i, f in zip(ids, dataset.image_files)]
    return ids


def labels_to_xyxy(labels: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised [cls, cx, cy, w, h] rows -> (classes (n,), xyxy boxes (n, 4)) in pixels of `shape` (h, w)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1, 5)
    h, w = shape
    boxes = xywh2xyxy(labels[:, 1:5] * np.array([w, h, w, h], dtype=np.float64))
    return labels[:, 0].astype(np.int64), boxes


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), 1)


def ground_truth(dataset: Any, names: Sequence[str] | None = None, category_ids: Sequence[int] | None = None,
                 indices: Sequence[int] | None = None) -> dict[str, Any]:
    """A COCO ground-truth dict (images, annotations, categories) in original pixels from a dataset.

    Uses `dataset.labels` (normalised to the original image), `dataset.shapes` (original h, w) and
    `dataset.image_ids`; `names` default to the dataset's, `category_ids` to its data config's.
    `indices` restricts it to the images that were evaluated (all by default).
    """
    names = list(names if names is not None else _dataset_names(dataset))
    if category_ids is None:
        category_ids = dataset_category_ids(dataset)
    cat_map = category_id_map(names, category_ids)
    ids = dataset_image_ids(dataset)
    images, annotations = [], []
    for i in range(len(ids)) if indices is None else indices:
        image_id, file, labels, shape = ids[i], dataset.image_files[i], dataset.labels[i], dataset.shapes[i]
        h, w = int(shape[0]), int(shape[1])
        images.append({"id": image_id, "file_name": Path(file).name, "height": h, "width": w})
        classes, boxes = labels_to_xyxy(labels, (h, w))
        for c, box in zip(classes, _xyxy_to_xywh(boxes)):
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": cat_map[int(c)],
                "bbox": [round(float(v), 3) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0,
            })
    categories = [{"id": cid, "name": str(name)} for cid, name in zip(cat_map, names)]
    return {"info": {"description": "scaledyolo ground truth"}, "images": images, "annotations": annotations,
            "categories": categories}


def annotation_file(dataset: Any) -> Path | None:
    """The COCO annotation JSON of a COCO-layout split, else None."""
    cfg = getattr(dataset, "data_cfg", None)
    split = cfg.splits.get(getattr(dataset, "split", None)) if cfg is not None else None
    return Path(split.annotations) if split is not None and split.kind == "coco" else None


def dataset_ground_truth(dataset: Any, names: Sequence[str] | None = None, category_ids: Sequence[int] | None = None,
                         indices: Sequence[int] | None = None) -> dict[str, Any]:
    """The ground truth the headline figures are scored against, restricted to the evaluated images.

    A COCO-layout split is scored against its annotation file itself, as the official evaluation
    does: crowd regions (which training leaves out) then excuse the detections that fall on them,
    and object sizes come from the file's segment areas. Other layouts: `ground_truth`.
    """
    file = annotation_file(dataset)
    if file is None:
        return ground_truth(dataset, names=names, category_ids=category_ids, indices=indices)
    data = json.loads(file.read_text(encoding="utf-8"))
    ids = dataset_image_ids(dataset)
    keep = {ids[i] for i in (range(len(ids)) if indices is None else indices)}
    annotations = []
    for ann in data.get("annotations") or []:
        if ann.get("image_id") in keep:
            w, h = ann["bbox"][2:4]
            annotations.append({**ann, "id": len(annotations) + 1, "iscrowd": int(ann.get("iscrowd", 0)),
                                "area": float(ann.get("area", w * h))})
    return {"info": data.get("info", {}), "images": [im for im in data["images"] if im.get("id") in keep],
            "annotations": annotations, "categories": data.get("categories") or []}


def results_json(image_ids: Sequence[int | str], predictions: Sequence[np.ndarray],
                 cat_map: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results list from per-image (n, 6) [x1, y1, x2, y2, score, class] arrays in original pixels."""
    out = []
    for image_id, pred in zip(image_ids, predictions):
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, 6)
        for box, score, cls in zip(_xyxy_to_xywh(pred[:, :4]), pred[:, 4], pred[:, 5]):
            out.append({"image_id": image_id, "category_id": int(cat_map[int(cls)]),
                        "bbox": [round(float(v), 3) for v in box], "score": round(float(score), 5)})
    return out


def coco_evaluate(gt: dict[str, Any], results: list[dict[str, Any]], verbose: bool = False) -> dict[str, Any]:
    """pycocotools bbox evaluation: map (AP@[.5:.95]), map50, map75, map_small/medium/large, per_class.

    `per_class` follows `gt["categories"]`: AP and AP50 per category (None where it has no ground
    truth). Image ids may be ints or strings (mixed too): they are renumbered internally, in the
    order pycocotools would sort them, because it cannot sort a mix.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    keys = ("map", "map50", "map75", "map_small", "map_medium", "map_large")
    # Number the images in the order pycocotools sorts their ids: with tied scores, that order decides
    # which detection counts first, so this keeps the figures equal to scoring the saved JSON directly.
    ordered = sorted((img["id"] for img in gt["images"]), key=lambda i: (isinstance(i, str), i))
    renumber = {image_id: k + 1 for k, image_id in enumerate(ordered)}
    gt = copy.deepcopy(gt)
    for img in gt["images"]:
        img["id"] = renumber[img["id"]]
    for ann in gt["annotations"]:
        ann["image_id"] = renumber[ann["image_id"]]
    dts = []
    for r in results:
        if r["image_id"] not in renumber:
            raise ValueError(f"result for image {r['image_id']!r}, which is not in the ground truth")
        dts.append({**r, "bbox": list(r["bbox"]), "image_id": renumber[r["image_id"]]})
    per_class_empty = [{"category_id": c["id"], "name": c.get("name", str(c["id"])), "ap": None, "ap50": None}
                       for c in gt["categories"]]
    if not dts or not gt["annotations"]:
        return {**{k: 0.0 for k in keys}, "per_class": per_class_empty, "stats": [0.0] * 12}
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dts)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats]
    precision = ev.eval["precision"]  # (T, R, K, A, M); -1 where a category has no ground truth
    cat_index = {c: k for k, c in enumerate(ev.params.catIds)}
    per_class = []
    for entry in per_class_empty:
        k = cat_index.get(entry["category_id"])
        p = precision[:, :, k, 0, -1] if k is not None else np.full((1, 1), -1.0)
        has_gt = bool((p > -1).any())
        per_class.append({**entry, "ap": float(p[p > -1].mean()) if has_gt else None,
                          "ap50": float(p[0][p[0] > -1].mean()) if has_gt else None})
    # pycocotools reports -1 for an area range with no ground truth; 0 reads better and averages safely.
    out = {k: max(stats[i], 0.0) for i, k in zip((0, 1, 2, 3, 4, 5), keys)}
    return {**out, "per_class": per_class, "stats": stats}


def _dataset_names(dataset: Any) -> list[str]:
    names = getattr(dataset, "names", None)
    if names is None and getattr(dataset, "data_cfg", None) is not None:
        names = dataset.data_cfg.names
    if names is None:
        raise ValueError("the dataset carries no class names: pass names=")
    return list(names)


def dataset_category_ids(dataset: Any) -> list[int] | None:
    """The original category ids of a COCO-layout dataset (from its data config), else None."""
    ids = getattr(dataset, "category_ids", None)
    cfg = getattr(dataset, "data_cfg", None)
    if ids is None and cfg is not None:
        ids = getattr(cfg, "category_ids", None)
    return None if ids is None else list(ids)
