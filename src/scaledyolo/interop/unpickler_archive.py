"""Reading a torch file within size limits: zip archives checked before any entry is read, streams bounded.

Every size a foreign file declares (zip entry sizes, pickle lengths, storage byte counts) is checked
against what the file can hold before memory is allocated (see SECURITY.md). torch writes zip entries
uncompressed and an official P7 checkpoint's data.pkl is about 0.4 MB, so these limits leave a wide
margin for real files.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

MAX_PICKLE_BYTES = 16 << 20  # the data.pkl of a zip archive
MAX_COMPRESSION_RATIO = 10  # decompressed / compressed bytes, per entry and for the whole archive
MAX_ZIP_ENTRIES = 100_000
ZIP_CHUNK = 1 << 20  # decompression step: a lying entry is caught within one chunk of its declared size
MAX_LINE = 1 << 16  # the longest text line a protocol-0 pickle may hold


class TooLarge(Exception):
    """A size read from the file is past a limit (checked before the memory is allocated)."""


def check_zip_sizes(zf: zipfile.ZipFile, archive_bytes: int) -> None:
    """Refuse a zip whose entries would expand far past the archive itself (a zip bomb), before reading any.

    torch writes its entries uncompressed (ratio 1); a compressed one may expand MAX_COMPRESSION_RATIO times.
    """
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise TooLarge(f"the archive has {len(infos)} entries (limit {MAX_ZIP_ENTRIES})")
    for info in infos:
        if info.file_size > max(info.compress_size, 1) * MAX_COMPRESSION_RATIO:
            raise TooLarge(f"entry {info.filename} would expand {info.file_size} bytes from {info.compress_size} "
                           f"(compression ratio limit {MAX_COMPRESSION_RATIO})")
    total = sum(info.file_size for info in infos)
    if total > archive_bytes * MAX_COMPRESSION_RATIO:
        raise TooLarge(f"its entries would expand to {total} bytes from a {archive_bytes}-byte archive "
                       f"(compression ratio limit {MAX_COMPRESSION_RATIO})")


def read_zip_entry(zf: zipfile.ZipFile, name: str, limit: int) -> bytearray:
    """An entry's bytes, decompressed in chunks and stopped at `limit` or at its declared size (which can lie)."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise TooLarge(f"entry {name} is {info.file_size} bytes (limit {limit})")
    out = bytearray()
    with zf.open(info) as entry:
        while chunk := entry.read(ZIP_CHUNK):
            out += chunk
            if len(out) > min(limit, info.file_size):
                raise TooLarge(f"entry {name} expands past its declared {info.file_size} bytes")
    return out


class BoundedReader:
    """A file whose reads never ask for more than what is left in it: a pickle or storage header declaring
    a length of gigabytes cannot make `read(n)` allocate them."""

    def __init__(self, f: io.BufferedIOBase, size: int) -> None:
        self._f = f
        self._size = size

    def left(self) -> int:
        return self._size - self._f.tell()

    def read(self, n: int = -1) -> bytes:
        return self._f.read(self.left() if n is None or n < 0 else min(n, self.left()))

    def readline(self, limit: int = -1) -> bytes:
        return self._f.readline(MAX_LINE if limit is None or limit < 0 else min(limit, MAX_LINE))

    def readinto(self, buffer: Any) -> int:
        if len(buffer) > self.left():
            raise ValueError("the file ends inside a pickled buffer")
        return self._f.readinto(buffer)


def torch_file_kind(head: bytes) -> str | None:
    """'zip' (torch >= 1.6 archive, even a damaged one), 'pickle' (legacy stream or bare pickle) or None,
    from a file's first two bytes."""
    if head[:2] == b"PK":
        return "zip"
    return "pickle" if head[:1] == b"\x80" else None

