"""The pixel size an image file declares, read from its header before anything is decoded.

A 467-byte PNG can declare 40000 x 40000 pixels: decoding it asks for 4.8 GB (OpenCV refuses past
2^30 pixels with an exception; below that it allocates whatever the header says, 1.2 GB for a 389 KB
PNG of 20000 x 20000). So every image is measured first and refused past `max_image_pixels()`: by
default 67,108,864 pixels (8192 x 8192, 201 MB once decoded as 8-bit BGR; a 48 or 61 MP photo
passes). Pillow's bomb limit (178,956,970) was too high for our bound of 1 GiB from a small file:
`predict` holds the picture about four times (decoded, RGB, annotated, BGR for the encoder) and
peaked at 1.93 GB RSS on a 522 KB PNG of that size, 0.95 GB at 8192 x 8192 (Intel Xeon, 2 cores).
`SCALEDYOLO_MAX_IMAGE_PIXELS` changes it (0: no limit of ours; OpenCV's own 2^30 still applies).

Only formats whose header we can read are decoded: JPEG, PNG, BMP, TIFF (and BigTIFF), WebP, GIF,
PNM/PAM/PFM and Sun raster; anything else OpenCV might decode (JPEG 2000, OpenEXR, AVIF, HDR) is
refused as unsupported, since its size could not be checked.
"""

from __future__ import annotations

import os
import re
import struct

from scaledyolo.errors import UserError

MAX_IMAGE_PIXELS = 1 << 26  # 8192 x 8192; see the module docstring for why not Pillow's 178,956,970
ENV_MAX_IMAGE_PIXELS = "SCALEDYOLO_MAX_IMAGE_PIXELS"
SUPPORTED = "JPEG, PNG, BMP, TIFF, WebP, GIF, PNM/PAM/PFM, Sun raster"


class HeaderError(ValueError):
    """The header is unreadable, declares an impossible size, or one past the limit; the message says which."""


def max_image_pixels() -> int | None:
    """The pixel limit: `SCALEDYOLO_MAX_IMAGE_PIXELS` when set (0 or `none`: no limit), else the default."""
    text = os.environ.get(ENV_MAX_IMAGE_PIXELS, "").strip().replace("_", "")
    if not text:
        return MAX_IMAGE_PIXELS
    if text.lower() in ("0", "none"):
        return None
    if not text.isdigit():
        raise UserError(f"{ENV_MAX_IMAGE_PIXELS}={text!r} must be a whole number of pixels (0: no limit)")
    return int(text)


def check_image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header of an encoded image; `HeaderError` when unknown, damaged or too large."""
    width, height = image_size(data)
    if width <= 0 or height <= 0:
        raise HeaderError(f"damaged image header (declares {width} x {height} pixels)")
    limit = max_image_pixels()
    if limit is not None and width * height > limit:
        raise HeaderError(f"image too large: the header declares {width} x {height} = {width * height:,} pixels, "
                          f"more than the limit of {limit:,} (set {ENV_MAX_IMAGE_PIXELS} to change it)")
    return width, height


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) an encoded image declares; `HeaderError` for unsupported or damaged headers."""
    try:
        if data[:3] == b"\xff\xd8\xff":
            return _jpeg(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _png(data)
        if data[:2] == b"BM":
            return _bmp(data)
        if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            return _tiff(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:1] == b"P" and data[1:2] in b"1234567Ff" and len(data) > 2:
            return _pnm(data)
        if data[:4] == b"\x59\xa6\x6a\x95":
            return struct.unpack(">ii", data[4:12])
    except struct.error:
        raise HeaderError("damaged image header (the file ends inside it)") from None
    raise HeaderError(f"not an image in a supported format ({SUPPORTED})")


def _png(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise HeaderError("damaged PNG (no IHDR chunk first)")
    return struct.unpack(">II", data[16:24])


def _jpeg(data: bytes) -> tuple[int, int]:
    """The first start-of-frame segment's size, walking the segments (EXIF thumbnails are skipped whole)."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise HeaderError("damaged JPEG (bad segment marker)")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if marker in (0xDA, 0xD9):
            break
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    raise HeaderError("damaged JPEG (no frame header before the image data)")


def _bmp(data: bytes) -> tuple[int, int]:
    (dib_size,) = struct.unpack("<I", data[14:18])
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return width, abs(height)  # a negative height means top-down rows


def _tiff(data: bytes) -> tuple[int, int]:
    """Width and length of the first IFD (the page OpenCV decodes); tiles count against the limit too."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\0", b"\0+")
    if big:
        (offset,) = struct.unpack(order + "Q", data[8:16])
        (count,) = struct.unpack(order + "Q", data[offset:offset + 8])
        start, entry_size = offset + 8, 20
    else:
        (offset,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[offset:offset + 2])
        start, entry_size = offset + 2, 12
    types = {3: "H", 4: "I", 16: "Q"}
    tags: dict[int, int] = {}
    for i in range(min(count, (len(data) - start) // entry_size)):
        entry = data[start + i * entry_size:start + (i + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257, 322, 323) and kind in types:
            value = entry[12:] if big else entry[8:]
            (tags[tag],) = struct.unpack(order + types[kind], value[:struct.calcsize(types[kind])])
    if 256 not in tags or 257 not in tags:
        raise HeaderError("damaged TIFF (no ImageWidth/ImageLength in the first directory)")
    width, height = tags[256], tags[257]
    if tags.get(322, 0) * tags.get(323, 0) > width * height:  # tiles larger than the image
        width, height = tags[322], tags[323]
    return width, height


def _webp(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise HeaderError("damaged WebP (bad lossless signature)")
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise HeaderError("damaged WebP (bad frame start code)")
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    raise HeaderError("damaged WebP (no VP8/VP8L/VP8X chunk first)")


_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n?)*(\d+)")
_PAM_FIELD = re.compile(rb"^(WIDTH|HEIGHT)\s+(\d+)", re.M)


def _pnm(data: bytes) -> tuple[int, int]:
    head = data[:4096]
    if head[1:2] == b"7":  # PAM: WIDTH and HEIGHT lines before ENDHDR
        fields = dict(_PAM_FIELD.findall(head.split(b"ENDHDR")[0]))
        if b"WIDTH" not in fields or b"HEIGHT" not in fields:
            raise HeaderError("damaged PAM header (no WIDTH/HEIGHT)")
        return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
    first = _PNM_TOKEN.match(head, 2)
    second = _PNM_TOKEN.match(head, first.end()) if first else None
    if second is None:
        raise HeaderError("damaged PNM header (no width and height)")
    return int(first.group(1)), int(second.group(1))
