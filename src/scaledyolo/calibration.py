"""Calibration pictures for int8 export: a data YAML's val split or a folder, prepared as the model will see them.

Quantisation ranges are only as good as the pictures they are measured on, so these are the user's
own: `--data YAML` (its `val` split, any layout the data loader reads) or `--calib DIR` (every image
under it). Each is letterboxed by predict's own `preprocess` into the square `img` x `img` input
(predict's square geometry; a static IR has exactly that input) and scaled to 0-1 RGB. At most
`limit` pictures are used, spread evenly over the sorted list. Unreadable files are reported and skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from scaledyolo.data.split_files import read_split
from scaledyolo.data.dataset import load_data_config
from scaledyolo.data.formats import list_folder
from scaledyolo.errors import UserError
from scaledyolo.media import read_image
from scaledyolo.predict import preprocess

LOGGER = logging.getLogger("scaledyolo.export")
DEFAULT_LIMIT = 300  # NNCF's default subset size


def calibration_files(data: str | Path | None = None, calib: str | Path | None = None) -> list[Path]:
    """The image files of `data`'s val split, or under the folder `calib` (exactly one of the two)."""
    if (data is None) == (calib is None):
        raise UserError("int8 calibration needs exactly one of --data YAML (its val split) or --calib DIR")
    if data is not None:
        cfg = load_data_config(data)
        samples, _ = read_split(cfg, cfg.split("val"))
        files, source = [s.image for s in samples], Path(data)
    else:
        source = Path(calib).expanduser()
        if not source.is_dir():
            raise UserError("--calib must be a folder of images", source)
        files = list_folder(source)[0]
    if not files:
        raise UserError("no images to calibrate on", source)
    return files


def calibration_samples(files: list[Path], img: int, stride: int, limit: int = DEFAULT_LIMIT) -> list[np.ndarray]:
    """Up to `limit` of `files` as float32 `(1, 3, img, img)` 0-1 RGB batches; unreadable files skipped."""
    if limit < 1:
        raise UserError(f"--calib-images must be at least 1, got {limit}")
    chosen = files if len(files) <= limit else [files[i] for i in np.linspace(0, len(files) - 1, limit).astype(int)]
    samples = []
    for file in chosen:
        try:
            rgb = read_image(file)
        except UserError as exc:
            LOGGER.warning("calibration: skipping %s", exc)
            continue
        batch, _ = preprocess([rgb], img, stride, geometry="square")
        samples.append(batch.numpy() / np.float32(255))
    if not samples:
        raise UserError(f"none of the {len(chosen)} calibration images could be read", chosen[0])
    return samples
