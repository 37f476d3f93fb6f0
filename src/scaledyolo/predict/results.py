"""What one picture's detections look like to a user: `Results` and its `Boxes`, shaped as ultralytics'.

Everything is numpy on the CPU, in the picture's original pixels: `Boxes.xyxy` (N, 4) float32 corners,
`.xywh` centre and size, `.xyxyn` / `.xywhn` the same divided by the picture's width and height,
`.conf` (N,) float32 (objectness x class probability, best first), `.cls` (N,) int64, `.data` (N, 6)
`[x1, y1, x2, y2, conf, cls]`. `Results.names` is `{class index: name}`.

Colour order: `plot()` returns a BGR picture, as cv2 and ultralytics do, so `cv2.imwrite(f, r.plot())`
and `r.save(f)` write the same file; `orig_img` stays the RGB picture predict was given (predict works
in RGB throughout, see `scaledyolo.drawing`).

`summary()` is one dict per detection, `{"name", "class", "score", "box": [x1, y1, x2, y2]}` (the records
`predict --save-json` writes); `to_json()` is that list as JSON text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scaledyolo.drawing import draw_boxes
from scaledyolo.files import atomic_write_text, plain_name
from scaledyolo.media import write_image
from scaledyolo.ops.boxes import xyxy2xywh


def plural(name: str, count: int) -> str:
    """A class name for `count` objects: "person" -> "persons", "bus" -> "buses"; a name not ending in a
    letter ("class 3", "7") stays as it is."""
    if count == 1 or not name[-1:].isalpha():
        return name
    return name + ("es" if name.endswith(("s", "x", "z", "ch", "sh")) else "s")


class Boxes:
    """The detections of one picture (see the module docstring for each view's shape and units)."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray, orig_shape: tuple[int, int]) -> None:
        self.xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        self.conf = np.asarray(conf, dtype=np.float32).reshape(-1)
        self.cls = np.asarray(cls, dtype=np.int64).reshape(-1)
        self.orig_shape = (int(orig_shape[0]), int(orig_shape[1]))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> "Boxes":
        """A subset (an index, a slice or a mask), as a `Boxes` of the same picture."""
        index = [index] if isinstance(index, (int, np.integer)) else index
        return Boxes(self.xyxy[index], self.conf[index], self.cls[index], self.orig_shape)

    def __repr__(self) -> str:
        return f"Boxes({len(self)} detections in a {self.orig_shape[1]}x{self.orig_shape[0]} picture)"

    @property
    def _gain(self) -> np.ndarray:
        h, w = self.orig_shape
        return np.array([w, h, w, h], dtype=np.float32)

    @property
    def xywh(self) -> np.ndarray:
        return xyxy2xywh(self.xyxy).astype(np.float32)

    @property
    def xyxyn(self) -> np.ndarray:
        return self.xyxy / self._gain

    @property
    def xywhn(self) -> np.ndarray:
        return self.xywh / self._gain

    @property
    def data(self) -> np.ndarray:
        return np.concatenate((self.xyxy, self.conf[:, None], self.cls[:, None].astype(np.float32)), 1)


@dataclass
class Results:
    """Detections on one picture: `boxes`, `names` {id: name}, `orig_shape` (h, w), `path` (None for
    arrays), `frame` (its number in a video), `orig_img` (RGB, when kept), `speed` (ms per stage) and
    `input_shape` (h, w of the letterboxed model input)."""

    boxes: Boxes
    names: dict[int, str]
    orig_shape: tuple[int, int]
    path: str | None = None
    frame: int | None = None
    orig_img: np.ndarray | None = field(default=None, repr=False)
    speed: dict[str, float] = field(default_factory=dict)
    input_shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def class_name(self, cls: int) -> str:
        return self.names.get(int(cls), str(int(cls)))

    def _picture(self) -> np.ndarray:
        if self.orig_img is None:
            raise ValueError("these results keep no picture (predict with keep_images=True)")
        return self.orig_img

    def plot(self, line_width: int | None = None, labels: bool = True, conf: bool = True) -> np.ndarray:
        """A BGR copy of the picture with boxes, class names (unless `labels=False`) and scores (unless
        `conf=False`) drawn on it (cv2's order)."""
        names = [self.class_name(c) for c in range(max(self.names, default=-1) + 1)]
        rgb = draw_boxes(self._picture(), self.boxes.xyxy, self.boxes.cls, self.boxes.conf if conf else None,
                         names, line_width, labels)
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)

    def save(self, path: str | Path, line_width: int | None = None, labels: bool = True, conf: bool = True) -> Path:
        """Write `plot()` atomically (encoded by the suffix; .jpg where OpenCV cannot write it); its path."""
        return write_image(Path(path), self.plot(line_width, labels, conf), bgr=True)

    def verbose(self) -> str:
        """Detections counted per class, in class order: "4 persons, 1 bus" ("(no detections)" for none)."""
        counts = np.bincount(self.boxes.cls) if len(self.boxes) else np.zeros(0, np.int64)
        parts = [f"{n} {plural(self.class_name(c), int(n))}" for c, n in enumerate(counts) if n]
        return ", ".join(parts) or "(no detections)"

    def summary(self, decimals: int = 5) -> list[dict[str, Any]]:
        """One dict per detection: name, class, score, box [x1, y1, x2, y2] in original pixels."""
        b = self.boxes
        return [{"name": self.class_name(c), "class": int(c), "score": round(float(s), decimals),
                 "box": [round(float(v), 2) for v in box]} for box, s, c in zip(b.xyxy, b.conf, b.cls)]

    def to_json(self, decimals: int = 5) -> str:
        """`summary()` as JSON text."""
        return json.dumps(self.summary(decimals))

    def save_txt(self, path: str | Path, save_conf: bool = False) -> Path:
        """Write YOLO labels (class cx cy w h, normalised 0-1; plus the score with `save_conf`) atomically."""
        lines = [f"{int(c)} " + " ".join(f"{v:.6f}" for v in box) + (f" {s:.5f}" if save_conf else "")
                 for box, s, c in zip(self.boxes.xywhn, self.boxes.conf, self.boxes.cls)]
        path = Path(path)
        atomic_write_text(path, "\n".join(lines) + "\n" if lines else "")
        return path

    def save_crop(self, save_dir: str | Path, file_name: str = "im.jpg") -> list[Path]:
        """Each detection's box cut from the picture, written as SAVE_DIR/CLASS_NAME/STEM.jpg (STEM_2.jpg ...
        for more of one class); the written paths. Class names come from the weights, so each must be a
        plain folder name (`scaledyolo.files.plain_name`)."""
        picture = self._picture()
        h, w = self.orig_shape
        stem = plain_name(Path(file_name).stem, "crop file name")
        written: list[Path] = []
        counts: dict[int, int] = {}
        for box, c in zip(self.boxes.xyxy, self.boxes.cls):
            x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
            x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
            if x2 <= x1 or y2 <= y1:
                continue
            counts[int(c)] = counts.get(int(c), 0) + 1
            name = stem if counts[int(c)] == 1 else f"{stem}_{counts[int(c)]}"
            folder = Path(save_dir) / plain_name(self.class_name(c), "class name")
            folder.mkdir(parents=True, exist_ok=True)
            written.append(write_image(folder / f"{name}.jpg", picture[y1:y2, x1:x2]))
        return written
