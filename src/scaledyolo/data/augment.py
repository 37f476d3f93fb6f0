"""Image-space augmentation of the official training, with boxes moved along with the pixels.

Every random choice comes from a `numpy.random.Generator` passed in by the caller, so a sample's
augmentation depends only on its seed (reproducible whatever the number of loader workers).
Boxes are `(n, 5)` arrays `[class, x1, y1, x2, y2]` in pixels of the image they belong to.
`letterbox` and `preprocess` (pictures letterboxed into one inference batch) also serve val, predict
and int8 calibration, so every path sees pictures prepared the same way.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

PAD_VALUE = 114


def letterbox(img: np.ndarray, new_shape: int | Sequence[int], color: tuple[int, int, int] = (114, 114, 114),
              auto: bool = False, scaleup: bool = True, stride: int = 32
              ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio, then pad to `new_shape` (h, w) (or an int for a square).

    auto=True pads only to the next multiple of `stride` (smallest rectangle); scaleup=False never
    enlarges (better validation mAP). Returns the image, the (w, h) resize ratios and the
    (left, top) padding actually added, so a box maps as ``x * rw + padw``.
    """
    shape = img.shape[:2]
    if isinstance(new_shape, (int, np.integer)):
        new_shape = (int(new_shape), int(new_shape))
    new_h, new_w = int(new_shape[0]), int(new_shape[1])
    r = min(new_h / shape[0], new_w / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    unpad_w, unpad_h = max(1, int(round(shape[1] * r))), max(1, int(round(shape[0] * r)))
    dw, dh = max(0, new_w - unpad_w), max(0, new_h - unpad_h)
    if auto:
        dw, dh = dw % stride, dh % stride
    if (shape[1], shape[0]) != (unpad_w, unpad_h):
        img = cv2.resize(img, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    top, left = dh // 2, dw // 2
    img = cv2.copyMakeBorder(img, top, dh - top, left, dw - left, cv2.BORDER_CONSTANT, value=color)
    return img, (unpad_w / shape[1], unpad_h / shape[0]), (float(left), float(top))


def preprocess(images: Sequence[np.ndarray], size: int, stride: int, geometry: str = "rect"
               ) -> tuple[torch.Tensor, list[tuple[tuple[float, float], tuple[float, float]]]]:
    """RGB pictures -> a uint8 (B, 3, H, W) batch and each picture's (ratio, padding).

    `square`: every picture letterboxed into `size` x `size`. `rect`: one picture, or pictures of
    one shape, get the smallest stride-multiple rectangle (less padding, faster, as the official
    detect); mixed shapes share the square.
    """
    boxed = [letterbox(im, size, auto=geometry == "rect", stride=stride) for im in images]
    if geometry == "rect" and len({b[0].shape for b in boxed}) > 1:
        boxed = [letterbox(im, size, auto=False, stride=stride) for im in images]
    batch = np.stack([b[0] for b in boxed]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(batch)), [(b[1], b[2]) for b in boxed]


def box_candidates(before: np.ndarray, after: np.ndarray, wh_thr: float = 2.0, ar_thr: float = 20.0,
                   area_thr: float = 0.2) -> np.ndarray:
    """Which transformed boxes are still real objects (the official rule).

    `before` (n, 4) xyxy scaled by the augmentation's zoom, `after` (n, 4) xyxy after transform and
    clipping. A box survives if both sides exceed `wh_thr` pixels, it kept more than `area_thr` of
    its (zoomed) area, and its aspect ratio stays below `ar_thr`.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + 1e-16) > area_thr) & (ar < ar_thr)


def perspective_matrix(in_hw: tuple[int, int], out_hw: tuple[int, int], rng: np.random.Generator,
                       degrees: float = 0.0, translate: float = 0.0, scale: float = 0.0, shear: float = 0.0,
                       perspective: float = 0.0) -> tuple[np.ndarray, float]:
    """A random 3x3 warp (centre, perspective, rotate+scale, shear, translate) and its zoom factor."""
    c = np.eye(3)
    c[0, 2], c[1, 2] = -in_hw[1] / 2, -in_hw[0] / 2
    p = np.eye(3)
    p[2, 0], p[2, 1] = rng.uniform(-perspective, perspective), rng.uniform(-perspective, perspective)
    angle = rng.uniform(-degrees, degrees)
    zoom = rng.uniform(1 - scale, 1 + scale)
    r = np.eye(3)
    r[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=zoom)
    s = np.eye(3)
    s[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    s[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    t = np.eye(3)
    t[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_hw[1]
    t[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_hw[0]
    return t @ s @ r @ p @ c, zoom


def transform_boxes(boxes: np.ndarray, m: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Warp xyxy boxes (n, 4) by the 3x3 matrix `m`: the enclosing box of the four warped corners,
    clipped to the output image."""
    n = len(boxes)
    if n == 0:
        return np.zeros((0, 4), dtype=np.float64)
    corners = np.ones((n * 4, 3))
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    corners = corners @ m.T
    xy = corners[:, :2] / corners[:, 2:3] if (m[2, :2] != 0).any() else corners[:, :2]
    xy = xy.reshape(n, 8)
    x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
    out = np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, out_hw[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, out_hw[0])
    return out


def random_perspective(img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, degrees: float = 0.0,
                       translate: float = 0.0, scale: float = 0.0, shear: float = 0.0, perspective: float = 0.0,
                       border: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Random affine/perspective warp of an image and its `[cls, x1, y1, x2, y2]` labels.

    A negative `border` crops (the mosaic's 2s canvas back to s); boxes that leave the picture or
    degenerate are dropped by `box_candidates`.
    """
    out_hw = (img.shape[0] + 2 * border[0], img.shape[1] + 2 * border[1])
    m, zoom = perspective_matrix(img.shape[:2], out_hw, rng, degrees, translate, scale, shear, perspective)
    if border != (0, 0) or (m != np.eye(3)).any():
        size = (out_hw[1], out_hw[0])
        fill = (PAD_VALUE,) * 3
        if perspective:
            img = cv2.warpPerspective(img, m, dsize=size, borderValue=fill)
        else:
            img = cv2.warpAffine(img, m[:2], dsize=size, borderValue=fill)
    if len(labels):
        boxes = transform_boxes(labels[:, 1:5], m, out_hw)
        keep = box_candidates(labels[:, 1:5] * zoom, boxes)
        labels = labels[keep].copy()
        labels[:, 1:5] = boxes[keep]
    return img, labels


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hgain: float = 0.5, sgain: float = 0.5,
                vgain: float = 0.5) -> None:
    """Random hue/saturation/value gains, in place on a BGR uint8 image (lookup tables: fast)."""
    if not (hgain or sgain or vgain):
        return
    r = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(merged, cv2.COLOR_HSV2BGR, dst=img)


def normalized_to_pixels(labels: np.ndarray, w: float, h: float, padw: float = 0.0, padh: float = 0.0) -> np.ndarray:
    """[cls, cx, cy, w, h] normalised -> [cls, x1, y1, x2, y2] pixels in an image of w x h placed at (padw, padh)."""
    out = labels.astype(np.float64, copy=True)
    out[:, 1] = w * (labels[:, 1] - labels[:, 3] / 2) + padw
    out[:, 2] = h * (labels[:, 2] - labels[:, 4] / 2) + padh
    out[:, 3] = w * (labels[:, 1] + labels[:, 3] / 2) + padw
    out[:, 4] = h * (labels[:, 2] + labels[:, 4] / 2) + padh
    return out


def pixels_to_normalized(labels: np.ndarray, w: float, h: float) -> np.ndarray:
    """[cls, x1, y1, x2, y2] pixels -> [cls, cx, cy, w, h] normalised to an image of w x h."""
    out = labels.astype(np.float64, copy=True)
    out[:, 1] = (labels[:, 1] + labels[:, 3]) / 2 / w
    out[:, 2] = (labels[:, 2] + labels[:, 4]) / 2 / h
    out[:, 3] = (labels[:, 3] - labels[:, 1]) / w
    out[:, 4] = (labels[:, 4] - labels[:, 2]) / h
    return out


LoadFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


def mosaic4(load: LoadFn, indices: Sequence[int], size: int, rng: np.random.Generator,
            hyp: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Four images around the centre of a 2s x 2s canvas, then a random warp back to s x s.

    `load(i)` returns a BGR image (long side about `size`) and its normalised `[cls, cx, cy, w, h]`
    labels. Returns the s x s image and pixel `[cls, x1, y1, x2, y2]` labels.
    """
    s = size
    yc, xc = s, s  # the official mosaic centre; the random warp that follows moves it
    canvas = None
    all_labels = []
    for i, index in enumerate(indices):
        img, labels = load(index)
        h, w = img.shape[:2]
        if canvas is None:
            canvas = np.full((s * 2, s * 2, img.shape[2]), PAD_VALUE, dtype=np.uint8)
        if i == 0:  # top left
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif i == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s * 2), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif i == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(s * 2, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s * 2), min(s * 2, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
        if len(labels):
            pix = normalized_to_pixels(labels, w, h, x1a - x1b, y1a - y1b)
            # Clip each box to the tile it was pasted into: parts cut off by the paste are gone.
            pix[:, [1, 3]] = pix[:, [1, 3]].clip(x1a, x2a)
            pix[:, [2, 4]] = pix[:, [2, 4]].clip(y1a, y2a)
            all_labels.append(pix)
    labels4 = np.concatenate(all_labels, 0) if all_labels else np.zeros((0, 5))
    return random_perspective(canvas, labels4, rng, degrees=hyp["degrees"], translate=hyp["translate"],
                              scale=hyp["scale"], shear=hyp["shear"], perspective=hyp["perspective"],
                              border=(-s // 2, -s // 2))


def mixup(img1: np.ndarray, labels1: np.ndarray, img2: np.ndarray, labels2: np.ndarray,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size images with a Beta(8, 8) ratio and keep both sets of boxes."""
    r = rng.beta(8.0, 8.0)
    img = (img1.astype(np.float32) * r + img2.astype(np.float32) * (1 - r)).astype(np.uint8)
    return img, np.concatenate((labels1, labels2), 0)


def flip(img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, flipud: float, fliplr: float
         ) -> tuple[np.ndarray, np.ndarray]:
    """Random up-down / left-right flips of an image and its normalised `[cls, cx, cy, w, h]` labels."""
    if rng.random() < flipud:
        img = np.flipud(img)
        if len(labels):
            labels[:, 2] = 1 - labels[:, 2]
    if rng.random() < fliplr:
        img = np.fliplr(img)
        if len(labels):
            labels[:, 1] = 1 - labels[:, 1]
    return img, labels
