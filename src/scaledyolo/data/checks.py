"""Check every sample of a split once, and cache the result next to the labels.

A sample with an unreadable image or any bad label is skipped whole and reported as a problem
(`{file, image, problem}`); small fixes (boxes clipped to the image, duplicate labels dropped) are
kept as notes; an image used despite a defect (a JPEG lacking only its end marker) is listed in
`warned` and logged as a warning. The cache is a JSON file keyed by the sizes and mtimes of every
image and label file, written atomically; when the label folder is read-only it goes under
~/.cache/scaledyolo instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from scaledyolo.data import formats
from scaledyolo.data.dataset import DataConfig, SplitSpec
from scaledyolo.data.image_header import HeaderError, check_image_size
from scaledyolo.errors import UserError
from scaledyolo.files import atomic_write_text, display_path
from scaledyolo.ops.boxes import xywh2xyxy, xyxy2xywh

LOGGER = logging.getLogger("scaledyolo.data")
CACHE_VERSION = 2  # 2: JPEGs lacking only their end marker are used
CLIP_TOLERANCE = 0.01  # boxes out of the image by at most this fraction are clipped without a note
ZERO_TAIL = 16  # a JPEG ending in this many zero bytes was cut and padded (an interrupted download)
MISSING_END_NOTE = "JPEG without its end-of-image marker, every row decodes: used (the file is left unchanged)"


class ImageError(ValueError):
    """An image file that cannot be used; the message says why."""


@dataclass
class SplitData:
    """The usable samples of one split (labels normalised [cls, cx, cy, w, h]; shapes (h, w))."""

    image_files: list[str]
    labels: list[np.ndarray]
    shapes: np.ndarray
    image_ids: list[int]
    problems: list[dict[str, str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)
    warned: list[dict[str, str]] = field(default_factory=list)  # images used with a warning, and why
    cache_file: str | None = None

    @property
    def backgrounds(self) -> int:
        return sum(1 for lab in self.labels if len(lab) == 0)


def jpeg_end(data: bytes) -> str:
    """How a JPEG's marker stream ends: "complete" (its end-of-image marker is reached), "no_end_marker"
    (the entropy-coded data of its last scan runs to the end of the file) or "truncated" (cut in its
    headers, or not a JPEG marker stream at all).

    Phones append data after the image (motion-photo videos, maker trailers), so the marker is not
    always near the end of the file; walking the segments finds it wherever the image itself ends.
    """
    pos, n = 2, len(data)
    while pos + 1 < n:
        if data[pos] != 0xFF:
            return "truncated"
        marker = data[pos + 1]
        if marker == 0xD9:
            return "complete"
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # restart markers and TEM carry no length
            pos += 2
            continue
        if pos + 4 > n:
            return "truncated"
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not stuffing or a restart
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return "no_end_marker"
                following = data[pos + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    pos += 2
                elif following == 0xFF:
                    pos += 1
                else:
                    break
    return "truncated"


def _last_block_missing(img: np.ndarray) -> bool:
    """Whether the image's last 8x8 block decoded as libjpeg's fill for missing data: flat mid-grey.

    A scan cut short leaves every block after the cut at zero coefficients, which decode to exactly
    (128, 128, 128); the last block is the first to go. Real photos practically never end in a flat
    128 block, and if one does, refusing it errs on the safe side.
    """
    h, w = img.shape[:2]
    corner = img[(h - 1) // 8 * 8:, (w - 1) // 8 * 8:].astype(np.int16)
    return bool((np.abs(corner - 128) <= 1).all())


def _complete_jpeg(buf: np.ndarray) -> tuple[np.ndarray, str]:
    """A JPEG lacking its end-of-image marker gets one appended in memory (OpenCV refuses it without);
    the note says so ("" for a complete file). Raises `ImageError` where rows are surely missing."""
    status = jpeg_end(buf.tobytes())
    if status == "complete":
        return buf, ""
    if status == "truncated":
        raise ImageError("truncated JPEG (cut before its image data ends)")
    if buf.size > ZERO_TAIL and not buf[-ZERO_TAIL:].any():
        raise ImageError("truncated JPEG (no end-of-image marker; the file ends in zero padding)")
    return np.concatenate((buf, np.array([0xFF, 0xD9], np.uint8))), MISSING_END_NOTE


def decode_image(path: str | Path, check: bool = False, notes: list[str] | None = None) -> np.ndarray:
    """Read an image as 8-bit 3-channel BGR, EXIF orientation applied (grey, RGBA, 16-bit converted).

    A JPEG that lacks only its end-of-image marker (its last rows all decode; common in scraped
    data) is used: the marker is added in memory, the file is never rewritten, and with `notes`
    given, `MISSING_END_NOTE` is appended there for the caller to report. check=True refuses
    truncated JPEG/PNG files: rows missing from a JPEG would decode as a grey tail. Raises `ImageError`.
    The header's pixel count is checked before decoding (`image_header`: a small file declaring a huge
    picture is refused, not decoded), and whatever the decoder objects to is an `ImageError` too.
    """
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"cannot read file ({exc.strerror or exc})") from None
    if buf.size == 0:
        raise ImageError("empty file")
    head, tail = buf[:8].tobytes(), buf[-1024:].tobytes()
    note = ""
    if head[:2] == b"\xff\xd8" and b"\xff\xd9" not in tail:
        try:
            buf, note = _complete_jpeg(buf)
        except ImageError:
            if check:
                raise
    if check and head == b"\x89PNG\r\n\x1a\n" and b"IEND" not in tail:
        raise ImageError("truncated PNG (no IEND chunk)")
    try:
        check_image_size(buf.tobytes())  # whole file: a TIFF may keep its directory at the end
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except HeaderError as exc:
        raise ImageError(str(exc)) from None
    except cv2.error as exc:
        raise ImageError(f"cannot decode this image ({_first_line(exc)})") from None
    if img is None or img.size == 0:
        raise ImageError("unreadable image (not a valid image file)")
    if note and check and _last_block_missing(img):
        raise ImageError("truncated JPEG (no end-of-image marker, and its last rows are missing)")
    if note and notes is not None:
        notes.append(note)
    return img


def _first_line(exc: Exception) -> str:
    """OpenCV's message without its source location: `OpenCV(4.x) file.cpp:79: error: (-215) what`."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(" error: ", 1)[-1][:200]


def validate_labels(sample: formats.Sample, hw: tuple[int, int], nc: int) -> tuple[np.ndarray, list[str]]:
    """A sample's boxes as normalised [cls, cx, cy, w, h], and notes on what was fixed.

    Raises `formats.LabelError` for a label that makes the sample unusable: class out of range,
    non-finite or non-positive size, box wholly outside the image.
    """
    h, w = hw
    n = len(sample.classes)
    if n == 0:
        return np.zeros((0, 5), np.float32), []
    boxes = np.asarray(sample.boxes, dtype=np.float64)
    if not np.isfinite(boxes).all():
        raise formats.LabelError(f"box {int(np.nonzero(~np.isfinite(boxes).all(1))[0][0]) + 1}: non-finite coordinate")
    xyxy = xywh2xyxy(boxes) if sample.normalized else boxes / np.array([w, h, w, h], dtype=np.float64)
    classes = np.asarray(sample.classes, dtype=np.int64)
    bad_cls = np.nonzero((classes < 0) | (classes >= nc))[0]
    if len(bad_cls):
        i = int(bad_cls[0])
        raise formats.LabelError(f"box {i + 1}: class {classes[i]} out of range (the data has {nc} classes: 0-{nc - 1})")
    size = np.stack((xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]), 1)
    bad_size = np.nonzero((size <= 0).any(1))[0]
    if len(bad_size):
        i = int(bad_size[0])
        raise formats.LabelError(f"box {i + 1}: non-positive size (w={size[i, 0] * w:g}, h={size[i, 1] * h:g} px)")
    outside = np.nonzero((xyxy[:, 2] <= 0) | (xyxy[:, 0] >= 1) | (xyxy[:, 3] <= 0) | (xyxy[:, 1] >= 1))[0]
    if len(outside):
        raise formats.LabelError(f"box {int(outside[0]) + 1}: wholly outside the {w}x{h} image")
    notes = []
    over = np.maximum(-xyxy.min(1), (xyxy - 1).max(1))
    if (over > CLIP_TOLERANCE).any():
        notes.append(f"{int((over > CLIP_TOLERANCE).sum())} box(es) partly outside the image, clipped")
    xyxy = xyxy.clip(0, 1)
    out = np.zeros((n, 5), np.float32)
    out[:, 0] = classes
    out[:, 1:] = xyxy2xywh(xyxy)
    _, first = np.unique(out, axis=0, return_index=True)
    if len(first) < n:
        notes.append(f"{n - len(first)} duplicate label(s) dropped")
        out = out[np.sort(first)]
    return out, notes


def _problem(file: str | Path, problem: str, image: str | Path | None = None) -> dict[str, str]:
    """A problem (or note) record: the file at fault, the image it concerns (default: the same file), what.

    Paths are display text (`display_path`): a file name need not be UTF-8, a report must print.
    """
    return {"file": display_path(file), "image": display_path(file if image is None else image), "problem": problem}


def _read_list(list_file: Path, root: Path, problems: list[dict[str, str]]) -> list[Path]:
    """The images a .txt list names (a byte-order mark, as Windows editors write, is allowed)."""
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read this image list ({exc})", list_file) from None
    images = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        if not p.is_absolute():
            p = list_file.parent / p if (list_file.parent / p).exists() else root / p
        if not p.is_file():
            problems.append(_problem(p, f"listed in {list_file.name} but not found"))
        elif not formats.is_image_file(p):
            problems.append(_problem(p, "not an image file (ignored)"))
        else:
            images.append(p)
    return images


def _folder_images(folder: Path, problems: list[dict[str, str]]) -> list[Path]:
    images, others = formats.list_folder(folder)
    stems = {p.with_suffix("") for p in images}
    for other in others:
        if other.suffix.lower() == ".txt" and other.with_suffix("") in stems:
            continue  # a label kept next to its image
        problems.append(_problem(other, "not an image file (ignored)"))
    return images


def read_split(cfg: DataConfig, spec: SplitSpec) -> tuple[list[formats.Sample], list[dict[str, str]]]:
    """The split's samples as the layout gives them, plus files found unusable before any image is opened."""
    problems: list[dict[str, str]] = []
    if spec.kind == "coco":
        coco = formats.read_coco(spec.sources[0], spec.annotations)
        problems += [_problem(spec.annotations, problem) for problem in coco.problems]
        samples = []
        for s in coco.samples:
            if s.image.is_file():
                samples.append(s)
            else:
                problems.append(_problem(s.image, f"listed in {spec.annotations.name} but not found"))
        return samples, problems
    images: list[Path] = []
    for source in spec.sources:
        images += _folder_images(source, problems) if source.is_dir() else _read_list(source, cfg.path, problems)
    if spec.kind == "voc":
        return formats.read_voc(images, spec.annotations, cfg.names), problems
    return formats.read_yolo(images), problems


def _stat_key(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in paths:
        try:
            st = p.stat()
            h.update(os.fsencode(p) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(os.fsencode(p) + b"\0missing\n")
    return h.hexdigest()


def _cache_key(cfg: DataConfig, spec: SplitSpec, samples: list[formats.Sample]) -> str:
    files = [s.image for s in samples]
    if spec.kind in ("folder", "list", "mixed"):
        files += [formats.yolo_label_path(s.image) for s in samples]
    elif spec.kind == "voc":
        files += [formats.voc_label_path(s.image, spec.annotations) for s in samples]
    else:
        files.append(spec.annotations)
    files += [s for s in spec.sources if s.is_file()]
    meta = json.dumps({"version": CACHE_VERSION, "names": cfg.names, "kind": spec.kind})
    return hashlib.sha1((meta + _stat_key(files)).encode()).hexdigest()


def _is_writable(folder: Path) -> bool:
    """Writable for real: root ignores permission bits, but a folder marked read-only stays untouched."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def cache_paths(spec: SplitSpec, samples: list[formats.Sample]) -> list[Path]:
    """Where the split's cache may live, preferred first: next to the labels, then under ~/.cache."""
    if spec.kind in ("voc", "coco"):
        anchor = spec.annotations
    elif spec.kind == "list":
        anchor = spec.sources[0].with_suffix("")
    else:
        anchor = formats.yolo_label_path(samples[0].image).parent if samples else spec.sources[0]
    primary = anchor.with_name(anchor.name + ".cache")
    fallback_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "scaledyolo"
    digest = hashlib.sha1(os.fsencode(primary.resolve())).hexdigest()[:16]
    out = []
    if _is_writable(primary.parent):
        out.append(primary)
    out.append(fallback_dir / f"{anchor.name}-{digest}.cache")
    return out


def _write_atomic(path: Path, text: str) -> bool:
    """Write the cache; False (and nothing left behind) where the folder is not writable after all."""
    try:
        atomic_write_text(path, text)
    except OSError:
        return False
    return True


def _load_cache(paths: list[Path], key: str) -> tuple[dict[str, Any], Path] | None:
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("version") == CACHE_VERSION and data.get("key") == key:
            return data, path
    return None


def _to_split_data(data: dict[str, Any], cache_file: Path | None) -> SplitData:
    labels = [np.array(lab, dtype=np.float32).reshape(-1, 5) for lab in data["labels"]]
    shapes = np.array(data["shapes"], dtype=np.int64).reshape(-1, 2)
    return SplitData(data["images"], labels, shapes, data["image_ids"], data["problems"], data["notes"],
                     data["warned"], None if cache_file is None else str(cache_file))


def _image_hw(path: Path) -> tuple[tuple[int, int], list[str]] | str:
    """(h, w) and the notes on an image used with a warning, or why it cannot be used."""
    notes: list[str] = []
    try:
        return decode_image(path, check=True, notes=notes).shape[:2], notes
    except ImageError as exc:
        return str(exc)


def _check_samples(samples: list[formats.Sample], nc: int, desc: str) -> dict[str, Any]:
    images, labels, shapes, ids, problems, notes, warned = [], [], [], [], [], [], []
    # Decoding dominates and OpenCV releases the GIL: threads give a near-linear speed-up.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        sizes = list(tqdm(pool.map(_image_hw, [s.image for s in samples]), total=len(samples), desc=desc,
                          unit="img", leave=False, disable=len(samples) < 64))
    for i, (s, checked) in enumerate(zip(samples, sizes)):
        image_id = s.image_id if s.image_id is not None else i
        if isinstance(checked, str):
            problems.append(_problem(s.image, checked))
            continue
        hw, image_notes = checked
        label_file = str(s.label_file) if s.label_file is not None and s.image_id is None else str(s.image)
        if s.problem:
            problems.append(_problem(label_file, s.problem, s.image))
            continue
        try:
            lab, fixed = validate_labels(s, hw, nc)
        except formats.LabelError as exc:
            problems.append(_problem(label_file, f"bad label: {exc}", s.image))
            continue
        notes += [_problem(label_file, n, s.image) for n in fixed]
        warned += [_problem(s.image, n) for n in image_notes]
        images.append(str(s.image))
        labels.append(lab.tolist())
        shapes.append([int(hw[0]), int(hw[1])])
        ids.append(int(image_id))
    return {"images": images, "labels": labels, "shapes": shapes, "image_ids": ids, "problems": problems,
            "notes": notes, "warned": warned}


def scan_split(cfg: DataConfig, split: str, use_cache: bool = True) -> SplitData:
    """Read and check a split, reusing the cache when no image or label file changed since."""
    spec = cfg.split(split)
    samples, early_problems = read_split(cfg, spec)
    key = _cache_key(cfg, spec, samples)
    paths = cache_paths(spec, samples)
    if use_cache:
        hit = _load_cache(paths, key)
        if hit is not None:
            result = _to_split_data(*hit)
            _log_summary(split, len(samples), result)
            return result
    data = _check_samples(samples, cfg.nc, f"Checking {split}")
    data["problems"] = early_problems + data["problems"]
    data.update(version=CACHE_VERSION, key=key)
    written = None
    if use_cache:
        text = json.dumps(data)
        written = next((p for p in paths if _write_atomic(p, text)), None)
    result = _to_split_data(data, written)
    _log_summary(split, len(samples), result)
    return result


def _log_summary(split: str, total: int, data: SplitData) -> None:
    if data.problems:
        lines = "\n".join(f"  {p['file']}: {p['problem']}" for p in data.problems[:20])
        more = f"\n  ... and {len(data.problems) - 20} more" if len(data.problems) > 20 else ""
        LOGGER.warning("%s: %d problem(s), %d of %d images usable:\n%s%s", split, len(data.problems),
                       len(data.image_files), total, lines, more)
    for w in data.warned:
        LOGGER.warning("%s: %s: %s", split, w["file"], w["problem"])
    if data.notes:
        LOGGER.info("%s: %d label fix(es), e.g. %s: %s", split, len(data.notes), data.notes[0]["file"],
                    data.notes[0]["problem"])


def require_images(data: SplitData, split: str, cfg: DataConfig) -> None:
    """A split with no usable image cannot be trained or evaluated on: say why."""
    if not data.image_files:
        why = f" ({len(data.problems)} problem(s), first: {data.problems[0]['file']}: {data.problems[0]['problem']})" \
            if data.problems else ""
        raise UserError(f"split '{split}' has no usable images{why}", cfg.file)
