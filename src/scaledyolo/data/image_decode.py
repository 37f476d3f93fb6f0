"""Image files decoded the one way the package reads pictures: 8-bit BGR, size checked, JPEG repair.

A JPEG lacking only its end-of-image marker (common in scraped data: every row decodes) is used
with the marker added in memory and a note for the caller to report; one cut short before its
image data ends, or padded with zeros after an interrupted download, is refused.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from scaledyolo.data.image_header import HeaderError, check_image_size

ZERO_TAIL = 16  # a JPEG ending in this many zero bytes was cut and padded (an interrupted download)
MISSING_END_NOTE = "JPEG without its end-of-image marker, every row decodes: used (the file is left unchanged)"


class ImageError(ValueError):
    """An image file that cannot be used; the message says why."""


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
    return decode_image_bytes(buf, check, notes)


def decode_image_bytes(buf: np.ndarray, check: bool = False, notes: list[str] | None = None) -> np.ndarray:
    """`decode_image` of an encoded image already in memory (uint8 bytes; a downloaded picture), same checks."""
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
