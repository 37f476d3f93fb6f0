"""Atomic file writes, used for every file the package produces: temp file beside the target, fsync, rename.

A kill (Ctrl-C, `kill -9`, a full disk, a power cut) never leaves a half-written checkpoint, cache,
picture or results file under the real name: readers see either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file beside `path` to write to; on success it replaces `path`, on error it is removed.

    The temporary file already exists (made by `mkstemp`) and is hidden: `.NAME.XXXX.tmp{suffix}`.
    `suffix` is for writers that pick the format by extension (OpenCV, matplotlib). The final file
    is 0644 (mkstemp makes it 0600), so outputs are as readable as any other file the user writes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)  # makes the rename itself survive a power cut


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path` as a Path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` as UTF-8 (no newline translation) to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = None) -> Path:
    """JSON-encode `obj` and write it atomically: compact without `indent` (results lists are large)."""
    text = json.dumps(obj, separators=(",", ":")) if indent is None else json.dumps(obj, indent=indent)
    return atomic_write_text(path, text)
