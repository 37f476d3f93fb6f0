"""Check every sample of a split once, and cache the result next to the labels.

A sample with an unreadable image or any bad label is skipped whole and reported as a problem
(`{file, image, problem}`); small fixes (boxes clipped to the image, duplicate labels dropped) are
kept as notes; an image used despite a defect (a JPEG lacking only its end marker) is listed in
`warned` and logged as a warning. The pieces: which files the split lists (`split_files`), image
decoding (`image_decode`), label geometry (`label_checks`), the cache (`split_cache`).
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from scaledyolo.data import formats
from scaledyolo.data.dataset import DataConfig
from scaledyolo.data.image_decode import ImageError, decode_image
from scaledyolo.data.label_checks import validate_labels
from scaledyolo.data.split_cache import CACHE_VERSION, cache_key, cache_paths, load_cache, write_cache
from scaledyolo.data.split_files import problem_record, read_split
from scaledyolo.errors import UserError

LOGGER = logging.getLogger("scaledyolo.data")


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
            problems.append(problem_record(s.image, checked))
            continue
        hw, image_notes = checked
        label_file = str(s.label_file) if s.label_file is not None and s.image_id is None else str(s.image)
        if s.problem:
            problems.append(problem_record(label_file, s.problem, s.image))
            continue
        try:
            lab, fixed = validate_labels(s, hw, nc)
        except formats.LabelError as exc:
            problems.append(problem_record(label_file, f"bad label: {exc}", s.image))
            continue
        notes += [problem_record(label_file, n, s.image) for n in fixed]
        warned += [problem_record(s.image, n) for n in image_notes]
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
    key = cache_key(cfg, spec, samples)
    paths = cache_paths(spec, samples)
    if use_cache:
        hit = load_cache(paths, key)
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
        written = next((p for p in paths if write_cache(p, text)), None)
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
