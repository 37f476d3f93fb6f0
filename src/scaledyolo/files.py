"""Atomic file writes, used for every file the package produces: temp file beside the target, fsync, rename.

A kill (Ctrl-C, `kill`, `kill -9`, a full disk, a power cut) never leaves a half-written checkpoint,
cache, picture or results file under the real name: readers see either the old file or the new one.
Temp files are removed on errors and Ctrl-C (an exception), and on SIGTERM/SIGHUP by a handler that is
installed only while a temp file is open (only `kill -9` and power cuts can leave one behind).

Also here, because every writer needs them: the rules for where outputs may go. A name read from a
file is never a path (`plain_name`), an output never replaces one of the command's inputs
(`check_outputs`), and paths are shown in messages even when they are not valid UTF-8 (`display_path`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from scaledyolo.errors import UserError

LOGGER = logging.getLogger("scaledyolo.files")
CLEANUP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
MAX_NAME_BYTES = 255  # the longest file name common file systems accept

_live_temps: dict[Path, int] = {}  # temp file -> the process that made it (forked workers inherit the dict)
_installed: dict[int, Any] = {}  # signal -> the handler ours replaced, while a temp file is live
_lock = threading.Lock()


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file beside `path` to write to; on success it replaces `path`, on error it is removed.

    The temporary file already exists (made by `mkstemp`) and is hidden: `.NAME.XXXX.tmp{suffix}`.
    `suffix` is for writers that pick the format by extension (OpenCV, matplotlib). The final file
    is 0644 (mkstemp makes it 0600), so outputs are as readable as any other file the user writes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{_printable(path.name)[:200]}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    _register(tmp)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _unregister(tmp)
    _fsync(path.parent)  # makes the rename itself survive a power cut


def _register(tmp: Path) -> None:
    """Track a live temp file; the first one installs the cleanup handlers (main thread, default handlers only)."""
    with _lock:
        _live_temps[tmp] = os.getpid()
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in CLEANUP_SIGNALS:
            if signum not in _installed and signal.getsignal(signum) is signal.SIG_DFL:
                _installed[signum] = signal.signal(signum, _remove_temps_and_die)


def _unregister(tmp: Path) -> None:
    """Forget a temp file; with none left, the handlers ours replaced are put back."""
    with _lock:
        _live_temps.pop(tmp, None)
        if _live_temps or threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in list(_installed.items()):
            if signal.getsignal(signum) is _remove_temps_and_die:
                signal.signal(signum, previous)
            del _installed[signum]


def _remove_temps_and_die(signum: int, frame: Any) -> None:
    """Signal handler: remove this process's temp files, then die of the signal as if no handler were set."""
    pid = os.getpid()
    for tmp, owner in list(_live_temps.items()):
        if owner == pid:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(pid, signum)


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


# --------------------------------------------------------------------------- where outputs may go


def _printable(text: str) -> str:
    """`text` with what UTF-8 cannot encode (bytes of a non-UTF-8 file name) written as \\xNN escapes."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def display_path(path: str | Path | bytes) -> str:
    """A path as text that can always be printed, logged or encoded as UTF-8 (any byte string is a valid
    POSIX file name; Python hands undecodable bytes over as lone surrogates, which OpenCV and UTF-8
    output streams cannot take)."""
    return _printable(os.fsdecode(path))


def plain_name(name: str, what: str = "name") -> str:
    """`name` itself when it is a plain file name: no folder part, not `.` or `..`, no control character,
    at most 255 bytes. Otherwise `UserError`: names from files and options never choose a folder."""
    text = str(name)
    problem = None
    if not text.strip():
        problem = "is empty"
    elif text in (".", ".."):
        problem = "is a folder reference"
    elif any(sep in text for sep in ("/", "\\", os.sep, os.altsep or "/")):
        problem = "holds a path separator"
    elif any(ord(c) < 32 or ord(c) == 127 for c in text):
        problem = "holds a control character"
    elif len(os.fsencode(text)) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        raise UserError(f"{what} {display_path(text)!r} {problem}; it must be a plain file name")
    return text


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: equal once resolved, or the same inode (hard links, case-folding
    file systems, bind mounts)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_outputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path | None]) -> None:
    """The one overwrite policy: an output that is one of the command's inputs is refused (`UserError`,
    before anything is written); another existing file is replaced, said once on stderr (logging).

    A replaced output is what the user asked for by naming it (as `cp` and `torch.save` do); a replaced
    input is data lost to a typo, so that is never done.
    """
    inputs = [Path(p) for p in inputs if p is not None and Path(p).exists()]
    for output in outputs:
        output = Path(output)
        for source in inputs:
            if same_file(output, source):
                raise UserError(f"the output would overwrite the input {display_path(source)}; choose another "
                                "output name or folder", display_path(output))
        if output.is_dir():
            raise UserError("the output is an existing folder; name a file", display_path(output))
        if output.exists():
            LOGGER.warning("replacing %s", display_path(output))
