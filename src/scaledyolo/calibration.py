"""Calibration pictures for int8 (export, and `--precision int8` in predict, val and bench), prepared as
the model will see them.

Quantisation ranges are only as good as the pictures they are measured on, so these are the user's
own. Who picks them:

- `export --int8`: `--data YAML` (its `val` split, any layout the data loader reads) or `--calib DIR`
  (every image under it), exactly one of the two (`calibration_files`);
- `predict --precision int8`: `--calib DIR` or `--data YAML` (val split), else the predict source's
  own pictures (`predict_calibration`); a video, webcam or stream source needs one of the two;
- `val --precision int8`: `--calib DIR`, else the data YAML's train split, never the split being
  scored (`val_calibration`);
- `bench --precision int8`: `--calib`/`--data`, else random pictures (`random_calibration`): only the
  speed is then meaningful, and a notice says so.

Each picture is letterboxed into the square `img` x `img` input (predict's square geometry, the
size of the run) and scaled to 0-1 RGB. At most `limit` pictures are used, spread evenly over the
sorted list. Unreadable files are reported and skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scaledyolo.data.augment import preprocess
from scaledyolo.data.dataset import load_data_config
from scaledyolo.data.formats import is_image_file, list_folder
from scaledyolo.data.split_files import read_split
from scaledyolo.errors import UserError
from scaledyolo.media import is_video, read_image, to_rgb

LOGGER = logging.getLogger("scaledyolo.export")
DEFAULT_LIMIT = 300  # NNCF's default subset size
RANDOM_PICTURES = 8  # bench without pictures: enough for NNCF to run, the ranges are meaningless anyway


@dataclass(frozen=True)
class Calibration:
    """The pictures int8 is calibrated on (image paths or RGB arrays) and what they are, for the log line."""

    pictures: Sequence[Path | np.ndarray]
    source: str
    limit: int = DEFAULT_LIMIT

    def samples(self, img: int, stride: int) -> list[np.ndarray]:
        """Up to `limit` of the pictures as float32 `(1, 3, img, img)` 0-1 RGB batches (see `calibration_samples`)."""
        return calibration_samples(self.pictures, img, stride, self.limit)

    def describe(self, count: int) -> str:
        """"int8: calibrated on 57 images of DIR" (`count`: the samples actually used)."""
        return f"int8: calibrated on {count} image{'s' if count != 1 else ''} of {self.source}"


def calibration_files(data: str | Path | None = None, calib: str | Path | None = None,
                      split: str = "val") -> list[Path]:
    """The image files of `data`'s `split` (default val), or under the folder `calib` (exactly one of the two)."""
    if (data is None) == (calib is None):
        raise UserError(f"int8 calibration needs exactly one of --data YAML (its {split} split) or --calib DIR")
    if data is not None:
        cfg = load_data_config(data)
        samples, _ = read_split(cfg, cfg.split(split))
        files, source = [s.image for s in samples], Path(data)
    else:
        source = Path(calib).expanduser()
        if not source.is_dir():
            raise UserError("--calib must be a folder of images", source)
        files = list_folder(source)[0]
    if not files:
        raise UserError("no images to calibrate on", source)
    return files


def chosen_calibration(calib: str | Path | None, data: str | Path | None, limit: int | None = None,
                       split: str = "val") -> Calibration:
    """The user's choice: the folder `calib`, else `data`'s `split` (one of the two must be given)."""
    if calib is not None:
        return Calibration(calibration_files(calib=calib), str(calib), _limit(limit))
    return Calibration(calibration_files(data=data, split=split), f"the {split} split of {data}", _limit(limit))


def predict_calibration(items: Sequence[Any], source: str, calib: str | Path | None = None,
                        data: str | Path | None = None, limit: int | None = None) -> Calibration:
    """`--calib DIR` or `--data YAML` (val split) when given, else the predict source's own pictures.

    `items` are what predict will read (image paths, arrays, PIL images, video or stream names);
    a video, webcam or stream URL among them needs `calib` or `data` (its frames are not read twice).
    """
    if calib is not None or data is not None:
        return chosen_calibration(calib, data, limit)
    pictures: list[Path | np.ndarray] = []
    for item in items:
        if isinstance(item, (str, Path)):
            text = str(item)
            if text.isdigit() or "://" in text or is_video(text):
                raise UserError("--precision int8 calibrates on the source's own pictures; for a video, webcam or "
                                "stream source give --calib DIR (images) or --data YAML", text)
            if is_image_file(Path(text)):  # other files of a folder are skipped by predict too
                pictures.append(Path(text))
        else:
            pictures.append(to_rgb(item))
    if not pictures:
        raise UserError("no pictures in the source to calibrate int8 on; give --calib DIR or --data YAML", source)
    return Calibration(pictures, source, _limit(limit))


def val_calibration(data: str | Path, calib: str | Path | None = None, limit: int | None = None) -> Calibration:
    """`--calib DIR` when given, else the train split of the data YAML (never the split being scored)."""
    if calib is not None:
        return chosen_calibration(calib, None, limit)
    cfg = load_data_config(data)
    if "train" not in cfg.splits:
        raise UserError("val --precision int8 calibrates on the data YAML's train split, and it has none: "
                        "give --calib DIR (images that are not the ones scored)", data)
    return chosen_calibration(None, data, limit, split="train")


def random_calibration(limit: int | None = None, seed: int = 0) -> Calibration:
    """Random pictures (bench without --calib/--data), with a logged notice that only the speed means anything."""
    LOGGER.warning("bench: int8 calibrated on random pictures (no --calib/--data): only the speed is meaningful")
    rng = np.random.default_rng(seed)
    count = min(_limit(limit), RANDOM_PICTURES)
    pictures = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(count)]
    return Calibration(pictures, "random pixels", count)


def _limit(limit: int | None) -> int:
    limit = DEFAULT_LIMIT if limit is None else limit
    if limit < 1:
        raise UserError(f"--calib-images must be at least 1, got {limit}")
    return limit


def calibration_samples(files: Sequence[Path | np.ndarray], img: int, stride: int,
                        limit: int = DEFAULT_LIMIT) -> list[np.ndarray]:
    """Up to `limit` of `files` (image paths or RGB arrays) as float32 `(1, 3, img, img)` 0-1 RGB batches,
    letterboxed as predict's square geometry does; unreadable files skipped."""
    _limit(limit)
    chosen = files if len(files) <= limit else [files[i] for i in np.linspace(0, len(files) - 1, limit).astype(int)]
    samples = []
    for file in chosen:
        try:
            rgb = file if isinstance(file, np.ndarray) else read_image(file)
        except UserError as exc:
            LOGGER.warning("calibration: skipping %s", exc)
            continue
        batch, _ = preprocess([rgb], img, stride, geometry="square")
        samples.append(batch.numpy() / np.float32(255))
    if not samples:
        raise UserError(f"none of the {len(chosen)} calibration images could be read", _shown(chosen[0]))
    return samples


def _shown(file: Path | np.ndarray) -> Path | None:
    return file if isinstance(file, Path) else None
