"""Boxes and class names drawn on pictures: predictions, validation and training batches, data previews.

One module so that every picture the package makes looks the same: one palette (a class has the
same colour in `scaledyolo predict`, `val --plots`, the training run and `data --preview`, and the
colours are the ones users know from other YOLO tools), one label style that stays legible from
thumbnails to 4K, and one atomic picture writer. Pictures are RGB uint8 arrays throughout; OpenCV
only sees BGR at the encoder. The one exception is what users hold: `Results.plot()` hands out BGR,
as cv2 and ultralytics do, and `write_image(..., bgr=True)` writes such a picture as it is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from scaledyolo.errors import UserError
from scaledyolo.files import atomic_write_bytes, display_path
from scaledyolo.ops.boxes import xywh2xyxy

_PALETTE = ((255, 56, 56), (56, 56, 255), (56, 200, 56), (255, 157, 151), (255, 178, 29), (207, 210, 49),
            (72, 249, 10), (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168),
            (0, 194, 255), (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133),
            (203, 56, 255), (255, 149, 200), (255, 55, 199))
_FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_SCORE = 0.25  # prediction rows below this are left out of batch mosaics


def class_color(c: int) -> tuple[int, int, int]:
    """The RGB colour of class index `c` (cycles through a fixed 21-colour palette)."""
    return _PALETTE[int(c) % len(_PALETTE)]


def _line_and_font(h: int, w: int, line_width: int | None = None) -> tuple[int, float]:
    """Line width and font scale for an h x w picture: both grow with its size (font scale at least 0.3)."""
    lw = line_width or max(round((h + w) / 2 * 0.003), 1)
    return lw, max(lw / 3, 0.3)


def _label(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], font_scale: float,
           thickness: int) -> None:
    """Text on a filled `color` box whose top-left corner is near (x, y) but kept inside the picture;
    above y when it fits, otherwise just below it. Black or white text, whichever reads better."""
    w = canvas.shape[1]
    text = text.encode("ascii", "replace").decode()  # Hershey fonts draw ASCII only; OpenCV segfaults on surrogates
    (tw, th), _ = cv2.getTextSize(text, _FONT, font_scale, thickness)
    above = y - th - 3 >= 0
    x = max(min(x, w - tw), 0)
    top, bottom = (y - th - 3, y) if above else (y, y + th + 3)
    cv2.rectangle(canvas, (x, top), (x + tw, bottom), color, -1, cv2.LINE_AA)
    text_color = (0, 0, 0) if sum(color) > 450 else (255, 255, 255)
    cv2.putText(canvas, text, (x, bottom - 2), _FONT, font_scale, text_color, thickness, cv2.LINE_AA)


def draw_boxes(canvas_rgb: np.ndarray, boxes_xyxy: Any, classes: Any, scores: Any = None,
               names: Sequence[str] | None = None, line_width: int | None = None, labels: bool = True
               ) -> np.ndarray:
    """A copy of `canvas_rgb` (H, W, 3) with each box (x1, y1, x2, y2 in its pixels) drawn in its class
    colour and labelled with the class name (and score, when `scores` is given).

    Line width and font grow with the picture size (font scale at least 0.3), so a 160 px thumbnail
    and a 4K frame both read well.
    """
    canvas = np.ascontiguousarray(canvas_rgb).copy()
    h, w = canvas.shape[:2]
    lw, font_scale = _line_and_font(h, w, line_width)
    thickness = max(lw - 1, 1)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    for k, (box, c) in enumerate(zip(boxes, classes)):
        color = class_color(c)
        p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
        cv2.rectangle(canvas, p1, p2, color, lw, cv2.LINE_AA)
        if labels:
            text = names[c] if names is not None and 0 <= c < len(names) else str(int(c))
            if scores is not None:
                text += f" {float(scores[k]):.2f}"
            _label(canvas, text, p1[0], p1[1], color, font_scale, thickness)
    return canvas


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def tile_batch(imgs: Any, targets: Any, names: Sequence[str] | None = None, paths: Sequence[str] | None = None,
               max_images: int = 16, max_size: int = 1920, min_width: int = 0, cols: int | None = None
               ) -> np.ndarray:
    """An RGB mosaic of a batch with its boxes: the picture to check labels and predictions at a glance.

    imgs: (B, 3, H, W) RGB, uint8 or float 0-1 (tensor or array). targets: rows [image_index, class,
    cx, cy, w, h] (+ a score column for predictions; rows scoring below 0.25 are not drawn),
    normalised 0-1 or in input pixels (told apart by whether any coordinate exceeds 1). Tiles are
    scaled so the mosaic is at most `max_size` on its long side and at least `min_width` wide;
    `cols` defaults to a square-ish grid. With `paths`, each tile carries its file name.
    """
    imgs = _to_numpy(imgs)[:max_images]
    if imgs.dtype != np.uint8:
        imgs = np.clip(imgs * (255.0 if imgs.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    targets = _to_numpy(targets).astype(np.float64)
    targets = targets.reshape(-1, targets.shape[-1]) if targets.size else np.zeros((0, 6))
    b, _, h, w = imgs.shape
    cols = max(1, min(cols or math.ceil(math.sqrt(b)), b))
    rows = math.ceil(b / cols)
    scale = min(1.0, max_size / max(cols * w, rows * h))
    scale = max(scale, min_width / (cols * w))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    mosaic = np.full((rows * th, cols * tw, 3), 255, dtype=np.uint8)
    normalised = len(targets) == 0 or targets[:, 2:6].max() <= 1.01
    to_tile = np.array([tw, th, tw, th]) / (1.0 if normalised else np.array([w, h, w, h]))
    for i in range(b):
        rows_i = targets[targets[:, 0] == i]
        scores = rows_i[:, 6] if rows_i.shape[1] > 6 else None
        if scores is not None:
            rows_i, scores = rows_i[scores >= MIN_SCORE], scores[scores >= MIN_SCORE]
        boxes = xywh2xyxy(rows_i[:, 2:6] * to_tile)
        tile = cv2.resize(np.ascontiguousarray(imgs[i].transpose(1, 2, 0)), (tw, th), interpolation=cv2.INTER_AREA)
        tile = draw_boxes(tile, boxes, rows_i[:, 1], scores, names)
        if paths is not None and i < len(paths):
            _label(tile, Path(paths[i]).name[:40], 0, th, (0, 0, 0), _line_and_font(th, tw)[1], 1)
        cv2.rectangle(tile, (0, 0), (tw - 1, th - 1), (255, 255, 255), 1)
        r, c = divmod(i, cols)
        mosaic[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
    return mosaic


def write_image(path: str | Path, picture: np.ndarray, bgr: bool = False) -> Path:
    """Encode a picture (RGB, or BGR with `bgr`) by the file's suffix (.jpg, .png, ...) and write it atomically."""
    path = Path(path)
    if not path.suffix.isascii():  # OpenCV would segfault on a suffix of undecodable bytes
        raise UserError(f"cannot write a picture with suffix {display_path(path.suffix)!r} (use .jpg or .png)",
                        display_path(path))
    picture = np.ascontiguousarray(picture)
    try:
        ok, buf = cv2.imencode(path.suffix, picture if bgr else cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    except cv2.error:
        ok = False
    if not ok:
        raise UserError(f"cannot write a picture with suffix {path.suffix!r} (use .jpg or .png)", path)
    return atomic_write_bytes(path, buf.tobytes())
