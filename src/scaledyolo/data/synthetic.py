"""A synthetic detection dataset: coloured shapes on textured backgrounds, in the YOLO layout.

Made for the demo and the tests: each class is a distinct shape with its own colour family, objects
are 8-40 % of the image side (learnable by yolov4-tiny in minutes on a CPU), several per image,
overlapping little. Generation is deterministic for a seed and takes milliseconds per image.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import yaml

from scaledyolo.files import atomic_write_text

NAMES = ["circle", "square", "triangle", "star"]
COLOURS_BGR = [(40, 40, 220), (220, 90, 30), (40, 190, 40), (20, 210, 240)]  # red, blue, green, yellow


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random colour field + grain + a few faint lines: texture without objects."""
    low = rng.uniform(60, 200, size=(4, 4, 3)).astype(np.float32)
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    img = img * 0.6 + img.mean() * 0.4  # keep backgrounds muted so coloured shapes stand out
    img += rng.normal(0, 10, size=(h, w, 3)).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
        p2 = tuple(int(v) for v in rng.integers(0, [w, h]))
        grey = int(rng.integers(70, 190))
        cv2.line(out, p1, p2, (grey, grey, grey), int(rng.integers(1, 3)), cv2.LINE_AA)
    return out


def _polygon(cls: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray | None:
    if cls == 1:  # square, slightly rotated
        k = np.arange(4) * math.pi / 2 + math.pi / 4 + angle * 0.3
        return np.stack((cx + r * np.cos(k), cy + r * np.sin(k)), 1)
    if cls == 2:  # triangle
        k = np.arange(3) * 2 * math.pi / 3 - math.pi / 2 + angle * 0.3
        return np.stack((cx + r * np.cos(k), cy + r * np.sin(k)), 1)
    if cls == 3:  # five-pointed star
        k = np.arange(10) * math.pi / 5 - math.pi / 2 + angle
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return np.stack((cx + rad * np.cos(k), cy + rad * np.sin(k)), 1)
    return None


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_image(rng: np.random.Generator, h: int, w: int, max_objects: int = 4,
               size_range: tuple[float, float] = (0.08, 0.40)) -> tuple[np.ndarray, np.ndarray]:
    """One picture and its labels (n, 5) [cls, cx, cy, w, h] normalised."""
    img = _background(rng, h, w)
    side = min(h, w)
    boxes: list[np.ndarray] = []
    labels = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            cls = int(rng.integers(0, len(NAMES)))
            size = rng.uniform(*size_range) * side
            r = size / 2
            cx, cy = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
            poly = _polygon(cls, cx, cy, r, rng.uniform(-math.pi, math.pi))
            box = np.array([cx - r, cy - r, cx + r, cy + r]) if poly is None else \
                np.concatenate((poly.min(0), poly.max(0)))
            if all(_iou(box, b) < 0.15 for b in boxes):
                break
        else:
            continue
        colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in COLOURS_BGR[cls])
        if poly is None:
            cv2.circle(img, (round(cx), round(cy)), round(r), colour, -1, cv2.LINE_AA)
        else:
            cv2.fillPoly(img, [np.round(poly).astype(np.int32)], colour, cv2.LINE_AA)
        box = np.clip(box, 0, [w, h, w, h])
        boxes.append(box)
        labels.append([cls, (box[0] + box[2]) / 2 / w, (box[1] + box[3]) / 2 / h, (box[2] - box[0]) / w,
                       (box[3] - box[1]) / h])
    return img, np.array(labels, dtype=np.float64).reshape(-1, 5)


def make_synthetic_dataset(root: str | Path, n_train: int = 64, n_val: int = 16, img_size: int = 256,
                           seed: int = 0) -> Path:
    """Write `root/images/{train,val}/*.jpg`, `root/labels/{train,val}/*.txt` and `root/data.yaml`.

    Images are `img_size` wide; a quarter are landscape 4:3 so rectangular batches get exercised.
    Returns the data YAML's path.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        img_dir, lab_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h = img_size if rng.random() < 0.75 else img_size * 3 // 4
            img, labels = make_image(rng, h, img_size)
            stem = f"{split}_{i:05d}"
            cv2.imwrite(str(img_dir / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            lines = "".join(f"{int(c)} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}\n" for c, x, y, bw, bh in labels)
            (lab_dir / f"{stem}.txt").write_text(lines)
    data = {"path": ".", "train": "images/train", "val": "images/val", "names": list(NAMES)}
    out = root / "data.yaml"
    atomic_write_text(out, yaml.safe_dump(data, sort_keys=False))
    return out
