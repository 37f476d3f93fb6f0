"""Read the three annotation layouts (YOLO txt, Pascal VOC XML, COCO JSON) into one `Sample` type.

Readers only parse: a label file that cannot be understood gives a `Sample` with `problem` set (the
checks skip it and report it); nothing here opens an image. Geometry checks live in `label_checks.py`.
"""

from __future__ import annotations

import io
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from scaledyolo.errors import UserError

MAX_BOXES_PER_IMAGE = 3000  # a few times the densest real datasets (SKU-110K ~700, DOTA ~2,000 objects per image)
MAX_CLASS_INDEX = 2**31 - 1  # beyond any class count; larger values are reported as written, not wrapped around
IMG_SUFFIXES = frozenset({".bmp", ".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"})


class LabelError(ValueError):
    """A label file that cannot be parsed; the message says which line and why."""


@dataclass
class Sample:
    """One image and its boxes as the layout gave them.

    normalized=True: `boxes` are YOLO `cx, cy, w, h` in 0-1; False: `x1, y1, x2, y2` in pixels.
    `label_file` is where the boxes came from (None: no labels, a background image).
    `image_id` is the COCO image id (None for the other layouts).
    """

    image: Path
    label_file: Path | None
    classes: np.ndarray
    boxes: np.ndarray
    normalized: bool
    image_id: int | None = None
    problem: str | None = None


def empty_sample(image: Path, label_file: Path | None, normalized: bool, image_id: int | None = None,
                 problem: str | None = None) -> Sample:
    return Sample(image, label_file, np.zeros(0, np.int64), np.zeros((0, 4)), normalized, image_id, problem)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMG_SUFFIXES


def list_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """All images under `folder` (recursive, sorted) and the non-image files found there (hidden files skipped)."""
    images, others = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            (images if is_image_file(path) else others).append(path)
    return sorted(images), sorted(others)


def yolo_label_path(image: Path) -> Path:
    """The label file of an image: the last `images` path component replaced by `labels`, suffix `.txt`.

    An image with no `images` component keeps its label file next to it.
    """
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_yolo_labels(text: str) -> np.ndarray:
    """Parse YOLO label text into an (n, 5) float array [class, cx, cy, w, h].

    Blank lines are allowed; every other line must be five numbers with an integral, non-negative
    class. Raises `LabelError` naming the first bad line, or when the file holds more than
    `MAX_BOXES_PER_IMAGE` boxes (parsing stops there: a million-line file costs no more than the cap).
    Ranges are checked later (`label_checks.py`).
    """
    rows = []
    for number, line in enumerate(io.StringIO(text, newline=None), 1):
        fields = line.split()
        if not fields:
            continue
        if len(rows) == MAX_BOXES_PER_IMAGE:
            raise LabelError(_too_many_boxes())
        if len(fields) != 5:
            raise LabelError(f"line {number}: expected 5 values (class cx cy w h), got {len(fields)}")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise LabelError(f"line {number}: not a number in {line.strip()[:60]!r}") from None
        cls = values[0]
        if not math.isfinite(cls) or cls != int(cls):
            raise LabelError(f"line {number}: class {fields[0]!r} is not an integer")
        if cls < 0:
            raise LabelError(f"line {number}: negative class {fields[0]}")
        if cls > MAX_CLASS_INDEX:
            raise LabelError(f"line {number}: class {fields[0]} out of range")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def _too_many_boxes() -> str:
    return f"more than {MAX_BOXES_PER_IMAGE} boxes for one image (the limit, formats.MAX_BOXES_PER_IMAGE)"


def read_yolo(images: Sequence[Path]) -> list[Sample]:
    """YOLO layout: one `.txt` per image (see `yolo_label_path`); a missing file means a background image."""
    samples = []
    for image in images:
        label = yolo_label_path(image)
        if not label.is_file():
            samples.append(empty_sample(image, None, True))
            continue
        try:
            rows = parse_yolo_labels(label.read_text(encoding="utf-8-sig"))
        except (LabelError, UnicodeDecodeError, OSError) as exc:
            samples.append(empty_sample(image, label, True, problem=f"bad label file: {exc}"))
            continue
        samples.append(Sample(image, label, rows[:, 0].astype(np.int64), rows[:, 1:5], True))
    return samples


def _voc_number(obj: ET.Element, tag: str) -> float:
    node = obj.find(f"bndbox/{tag}")
    if node is None or node.text is None:
        raise LabelError(f"object without bndbox/{tag}")
    try:
        return float(node.text)
    except ValueError:
        raise LabelError(f"bndbox/{tag} is not a number: {node.text!r}") from None


def parse_voc(xml_text: str | bytes, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Parse a Pascal VOC annotation: (classes (n,), boxes (n, 4) x1 y1 x2 y2 in pixels).

    Class names must be in `names`; raises `LabelError` otherwise or on malformed XML. Give bytes
    to let the XML declaration choose the encoding.
    """
    try:
        root = ET.fromstring(xml_text)
    except (ET.ParseError, LookupError, ValueError) as exc:  # LookupError: an unknown declared encoding
        raise LabelError(f"not valid XML ({exc})") from None
    index = {n: i for i, n in enumerate(names)}
    classes, boxes = [], []
    for obj in root.iter("object"):
        if len(classes) == MAX_BOXES_PER_IMAGE:
            raise LabelError(_too_many_boxes())
        name_node = obj.find("name")
        name = (name_node.text or "").strip() if name_node is not None else ""
        if name not in index:
            raise LabelError(f"class {name!r} is not in the data YAML's names")
        classes.append(index[name])
        boxes.append([_voc_number(obj, t) for t in ("xmin", "ymin", "xmax", "ymax")])
    return np.array(classes, dtype=np.int64), np.array(boxes, dtype=np.float64).reshape(-1, 4)


def voc_label_path(image: Path, xml_dir: Path) -> Path:
    """The Pascal VOC annotation of an image: `xml_dir/<image stem>.xml`."""
    return xml_dir / (image.stem + ".xml")


def read_voc(images: Sequence[Path], xml_dir: Path, names: Sequence[str]) -> list[Sample]:
    """Pascal VOC layout: `voc_label_path` per image; a missing XML means a background image."""
    samples = []
    for image in images:
        xml = voc_label_path(image, xml_dir)
        if not xml.is_file():
            samples.append(empty_sample(image, None, False))
            continue
        try:
            classes, boxes = parse_voc(xml.read_bytes(), names)
        except (LabelError, OSError) as exc:
            samples.append(empty_sample(image, xml, False, problem=f"bad annotation: {exc}"))
            continue
        samples.append(Sample(image, xml, classes, boxes, False))
    return samples


@dataclass
class CocoSplit:
    """The samples of a COCO JSON, its classes, and problems of the file as a whole (annotations that
    belong to no listed image)."""

    samples: list[Sample]
    names: list[str]
    category_ids: list[int]
    problems: list[str] = field(default_factory=list)


def coco_categories(json_file: Path) -> tuple[list[str], list[int]]:
    """The class names and category ids (sorted by id) of a COCO JSON, after the same checks as `read_coco`.

    For the data YAML, which needs only these: no image is looked at and no sample is built.
    """
    _, names, category_ids = _load_coco(json_file)
    return names, category_ids


def _load_coco(json_file: Path) -> tuple[dict, list[str], list[int]]:
    """Parse and check a COCO JSON: (its data, class names, category ids sorted by id)."""
    try:
        data = json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read COCO annotations ({exc})", json_file) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError("not a COCO annotation file (no 'images' list)", json_file)
    categories = data.get("categories") or []
    if not isinstance(categories, list) or not all(isinstance(c, dict) and _is_int(c.get("id")) for c in categories):
        raise UserError("'categories' must be a list of {id: integer, name: ...}", json_file)
    categories = sorted(categories, key=lambda c: c["id"])
    category_ids = [int(c["id"]) for c in categories]
    if len(set(category_ids)) < len(category_ids):
        raise UserError("duplicate category ids", json_file)
    names = [str(c.get("name", c["id"])) for c in categories]
    annotations = data.get("annotations") or []
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise UserError("'annotations' must be a list of objects", json_file)
    if not all(isinstance(i, dict) and _is_int(i.get("id")) and isinstance(i.get("file_name"), str)
               for i in data["images"]):
        raise UserError("every entry of 'images' needs an integer id and a file_name", json_file)
    if len({i["id"] for i in data["images"]}) < len(data["images"]):
        raise UserError("duplicate image ids", json_file)
    return data, names, category_ids


def read_coco(images_dir: Path, json_file: Path) -> CocoSplit:
    """COCO layout: every image listed in the JSON, category ids mapped to contiguous class indices.

    Crowd annotations (`iscrowd: 1`) are left out, as in the official training. An annotation with
    a malformed bbox or `iscrowd` marks its image as a problem; annotations whose `image_id` is not
    in `images` are counted in `problems` (they would otherwise vanish unnoticed), as are images whose
    `file_name` is absolute or climbs out of the images folder with `..` (a name in a file is no path).
    """
    data, names, category_ids = _load_coco(json_file)
    cat_index = {cid: i for i, cid in enumerate(category_ids)}
    image_ids = {info["id"] for info in data["images"]}
    per_image: dict[int, list[dict]] = {}
    orphans: list[object] = []
    for ann in data.get("annotations") or []:
        if _is_int(ann.get("image_id")) and ann["image_id"] in image_ids:
            per_image.setdefault(ann["image_id"], []).append(ann)
        else:
            orphans.append(ann.get("image_id"))
    problems = []
    if orphans:
        problems.append(f"{len(orphans)} annotation(s) for image ids not in 'images' ignored "
                        f"(e.g. image_id {repr(orphans[0])[:60]})")
    samples = []
    for info in data["images"]:
        if Path(info["file_name"]).is_absolute() or ".." in Path(info["file_name"]).parts:
            problems.append(f"image {info['id']}: file_name {info['file_name'][:200]!r} points outside the images "
                            "folder; skipped")
            continue
        image = images_dir / info["file_name"]
        if not image.is_file() and (images_dir / image.name).is_file():
            image = images_dir / image.name  # file_name with a folder prefix the images folder already is
        image_id = info["id"]
        try:
            anns = [a for a in per_image.get(image_id, []) if not _is_crowd(a)]
            if len(anns) > MAX_BOXES_PER_IMAGE:
                raise LabelError(_too_many_boxes())
            classes, boxes = _coco_boxes(anns, cat_index)
        except LabelError as exc:
            samples.append(empty_sample(image, json_file, False, image_id, problem=f"bad annotation: {exc}"))
            continue
        samples.append(Sample(image, json_file if len(anns) else None, classes, boxes, False, image_id))
    return CocoSplit(samples, names, category_ids, problems)


def _is_crowd(ann: dict) -> bool:
    """`iscrowd` as COCO defines it, 0 or 1 (absent: 0); anything else is a `LabelError`, not a guess."""
    value = ann.get("iscrowd", 0)
    if value not in (0, 1):
        raise LabelError(f"annotation {ann.get('id')}: iscrowd must be 0 or 1, got {value!r}")
    return bool(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coco_boxes(anns: Iterable[dict], cat_index: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    classes, boxes = [], []
    for ann in anns:
        cid = ann.get("category_id")
        if not _is_int(cid) or cid not in cat_index:
            raise LabelError(f"annotation {ann.get('id')}: unknown category_id {cid!r}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            raise LabelError(f"annotation {ann.get('id')}: bbox must be [x, y, w, h], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        classes.append(cat_index[cid])
        boxes.append([x, y, x + w, y + h])
    return np.array(classes, dtype=np.int64), np.array(boxes, dtype=np.float64).reshape(-1, 4)
