"""Pictures and videos in and out for `predict`: what a `--source` names, frames as RGB, atomic writers.

A source is an image file, a video file, a folder, a glob pattern, an image URL, a stream URL or a
webcam index. An http(s) URL whose path ends in an image suffix (`https://host/bus.jpg?x=1`) is an
image: downloaded into memory (at most `MAX_URL_BYTES`) and decoded as files are, pixel limit included;
any other URL (rtsp, an http stream) and a webcam index are opened as video.
Files named one by one must be readable (else `UserError`); files found in a folder or by a glob
that cannot be read are named in a logged warning (`scaledyolo.logs`) and skipped, so one bad file
never stops a long run.

OpenCV takes paths as UTF-8 text and crashes the process (a segfault) on a str it cannot encode, as
Python hands over a file name holding invalid UTF-8 bytes. So images are read as bytes and decoded in
memory (`decode_image`), and every path given to OpenCV passes `opencv_path` first.
"""

from __future__ import annotations

import glob
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from scaledyolo.data.image_decode import ImageError, decode_image, decode_image_bytes
from scaledyolo.drawing import write_image as encode_image
from scaledyolo.errors import UserError
from scaledyolo.files import atomic_path, display_path

LOGGER = logging.getLogger("scaledyolo.media")
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".asf", ".ts"}
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jfif", ".pbm", ".pgm", ".ppm",
                  ".dib", ".jp2", ".sr", ".ras"}
MAX_URL_BYTES = 64 << 20  # an image URL's download stops past this (a 8192 x 8192 PNG is rarely bigger)
URL_TIMEOUT_S = 30.0


@dataclass
class Frame:
    """One picture to detect on: RGB uint8 (H, W, 3), where it came from, and its frame number in a video."""

    rgb: np.ndarray
    path: str | None = None
    frame: int | None = None
    fps: float | None = None  # frame rate of the frames taken from its video (the video's / vid_stride)


def is_image_url(text: str) -> bool:
    """An http(s) URL whose path ends in an image suffix (queries and fragments aside)."""
    if not text.lower().startswith(("http://", "https://")):
        return False
    return Path(urllib.parse.urlsplit(text).path).suffix.lower() in IMAGE_SUFFIXES


def read_image_url(url: str, max_bytes: int = MAX_URL_BYTES) -> np.ndarray:
    """An image URL downloaded into memory (at most `max_bytes`) and decoded as `read_image` decodes
    files (header pixel limit, truncation checks): 8-bit RGB. `UserError` naming the URL otherwise."""
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:  # noqa: S310 (http(s) only)
            data = response.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"cannot download this image ({getattr(exc, 'reason', None) or exc})", url) from None
    if len(data) > max_bytes:
        raise UserError(f"image download is larger than {max_bytes:,} bytes", url)
    notes: list[str] = []
    try:
        bgr = decode_image_bytes(np.frombuffer(data, dtype=np.uint8), check=True, notes=notes)
    except ImageError as exc:
        raise UserError(str(exc), url) from None
    for note in notes:
        LOGGER.warning("%s: %s", url, note)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as 8-bit RGB (H, W, 3), EXIF orientation applied; grey, RGBA and 16-bit converted.

    Raises `UserError` naming the file when it cannot be decoded (truncated JPEG/PNG included); a JPEG
    that lacks only its end-of-image marker is used, with a logged warning.
    """
    notes: list[str] = []
    try:
        bgr = decode_image(path, check=True, notes=notes)
    except ImageError as exc:
        raise UserError(str(exc), display_path(path)) from None
    for note in notes:
        LOGGER.warning("%s: %s", display_path(path), note)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def opencv_path(path: str | Path) -> str:
    """`path` as the str OpenCV needs; `UserError` when it is not valid UTF-8 (OpenCV would segfault)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError("OpenCV cannot open a file whose name is not valid UTF-8; rename it",
                        display_path(text)) from None
    return text


def to_rgb(image: Any) -> np.ndarray:
    """A numpy array or PIL image as contiguous 8-bit RGB (H, W, 3).

    Arrays are taken as RGB (H, W, 3), RGBA (H, W, 4) or grey (H, W); uint16 is scaled to 8 bits.
    PIL images get their EXIF orientation applied, as files read by path do.
    """
    if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, np.ndarray):  # PIL
        from PIL import ImageOps  # Pillow is optional: only a PIL image handed in needs it

        image = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise UserError(f"expected an image path, an HxWx3 RGB numpy array or a PIL image, got {type(image).__name__}")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    if image.dtype != np.uint8:
        raise UserError(f"image arrays must be uint8 (or uint16), got {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise UserError(f"image arrays must be HxWx3 RGB, got shape {tuple(image.shape)}")
    return np.ascontiguousarray(image)


def is_video(path: str | Path) -> bool:
    return Path(str(path)).suffix.lower() in VIDEO_SUFFIXES


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _is_live(text: str) -> bool:
    """A webcam index or a stream URL (an image URL is not live: it is one picture)."""
    return text.isdigit() or (text.lower().startswith(STREAM_PREFIXES) and not is_image_url(text))


def expand_source(source: str | Path) -> tuple[list[Path | str], bool]:
    """The files (or stream/webcam) a `--source` names, and whether they came from a folder or glob.

    Hidden files are left out of folders and globs.
    """
    text = str(source)
    if _is_live(text) or is_image_url(text):
        return [text], False
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise UserError("folder has no files to detect on", path)
        return files, True
    if path.is_file():
        return [path], False
    if _is_glob(text):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)
                       if Path(p).is_file() and not Path(p).name.startswith("."))
        if not files:
            raise UserError("no files match this pattern", text)
        return files, True
    raise UserError("source not found (expected an image, video, folder, glob, URL or webcam index)", text)


def _video_frames(source: str | Path, capture: cv2.VideoCapture, vid_stride: int = 1) -> Iterator[Frame]:
    """Frames 0, N, 2N, ... (N = `vid_stride`; the others are grabbed, not decoded), numbered as in the video."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = (fps if 0 < fps < 1000 else 30.0) / vid_stride
    index = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                break
            yield Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), str(source), index, fps)
            index += 1
            for _ in range(vid_stride - 1):
                if not capture.grab():
                    return
                index += 1
    finally:
        capture.release()


def open_video(source: str | Path) -> cv2.VideoCapture:
    """A capture for a video file, stream URL or webcam index; `UserError` when it does not open."""
    text = opencv_path(source)
    capture = cv2.VideoCapture(int(text) if text.isdigit() else text)
    if not capture.isOpened():
        capture.release()
        raise UserError("cannot open this video (not a video, an unsupported codec, or no such camera)", text)
    return capture


def iter_frames(items: list[Any], skip_bad: bool = False, skipped: list[str] | None = None,
                vid_stride: int = 1) -> Iterator[Frame]:
    """Frames of image paths, image URLs, videos, streams, arrays and PIL images, in order; of videos and
    streams every `vid_stride`-th frame only.

    With `skip_bad`, an unreadable file is named in a logged warning and skipped instead of raising
    (and appended to `skipped`, for the end-of-run summary).
    """
    if vid_stride < 1:
        raise UserError(f"vid_stride must be 1 or more, got {vid_stride}")
    for item in items:
        if not isinstance(item, (str, Path)):
            yield Frame(to_rgb(item))
            continue
        text = str(item)
        try:
            if isinstance(item, str) and is_image_url(text):
                yield Frame(read_image_url(text), text)
            elif is_video(text) or _is_live(text):
                yield from _video_frames(text, open_video(text), vid_stride)
            else:
                yield Frame(read_image(text), text)
        except UserError as exc:
            if not skip_bad:
                raise
            LOGGER.warning("%s; skipped", exc)
            if skipped is not None:
                skipped.append(text)


def count_frames(items: list[Any], vid_stride: int = 1) -> int | None:
    """Pictures the items will give (video frame counts from their headers), or None when unknown."""
    total = 0
    for item in items:
        if isinstance(item, (str, Path)) and _is_live(str(item)):
            return None
        if isinstance(item, (str, Path)) and is_video(item):
            try:
                capture = cv2.VideoCapture(opencv_path(item))
            except UserError:  # reported when its turn comes
                total += 1
                continue
            n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
            capture.release()
            total += max(-(-n // vid_stride), 1)
        else:
            total += 1
    return total


def write_image(path: Path, picture: np.ndarray, bgr: bool = False) -> Path:
    """Write a picture (RGB, or BGR with `bgr`) atomically, encoded by the file's suffix, or as JPEG (suffix
    changed to .jpg) when OpenCV cannot write that suffix: annotated copies keep their source's name where
    they can."""
    path = Path(path)
    if not path.suffix.isascii() or not path.suffix.isprintable() or not cv2.haveImageWriter(f"x{path.suffix}"):
        path = path.with_suffix(".jpg")
    return encode_image(path, picture, bgr=bgr)


class VideoWriter:
    """An mp4v video written to a hidden temporary file and renamed into place by `close()`."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self._target = ExitStack()  # holds the open `atomic_path` from the first frame until `close()`

    def write(self, picture: np.ndarray, bgr: bool = False) -> None:
        """Append a frame, RGB (or BGR with `bgr`, as `Results.plot()` gives it)."""
        if self.writer is None:
            h, w = picture.shape[:2]
            with ExitStack() as stack:  # on an error here the temporary file is removed at once
                tmp = stack.enter_context(atomic_path(self.path, suffix=self.path.suffix))
                writer = cv2.VideoWriter(opencv_path(tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
                if not writer.isOpened():
                    raise UserError("OpenCV cannot write mp4v video here", self.path)
                self._target = stack.pop_all()
            self.writer = writer
        self.writer.write(picture if bgr else cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            self._target.close()
