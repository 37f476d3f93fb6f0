"""Messages meant for the user go through `logging`, never `warnings`, so they cannot be filtered away.

`warnings` is for programmers: `PYTHONWARNINGS=ignore` or `python -W ignore` (common in containers
and CI) silences it, and a user would then never learn that `broken.jpg` was skipped. Every
report of the package ("broken.jpg: truncated JPEG, skipped", "--img 100 rounded up, using 128")
goes to a logger under `scaledyolo` (`scaledyolo`, `scaledyolo.data`, ...).

Library users get standard logging behaviour. The package adds no handler of its own (not even a
`NullHandler`), so while the application configures none, Python's `logging.lastResort` prints
WARNING and above on stderr: skipped files are shown by default; INFO (anchor fit, label fixes) is
shown after `logging.basicConfig(level=logging.INFO)`, and `logging.getLogger("scaledyolo")
.setLevel(logging.ERROR)` silences the package. The CLI installs `install_cli_handler()`: INFO and
above on stderr, warnings prefixed `warning:`, written through tqdm so that progress bars stay intact.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping

from tqdm import tqdm

LOGGER = logging.getLogger("scaledyolo")
SHOWN_FILES = 3  # files named in an end-of-command summary; the per-file lines came earlier


class _StderrHandler(logging.Handler):
    """One line per record on stderr, printed around any running tqdm bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging's own rule: a failing handler never breaks the program)
            self.handleError(record)


class _CliFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return f"{record.levelname.lower()}: {message}" if record.levelno >= logging.WARNING else message


def install_cli_handler(level: int = logging.INFO) -> logging.Handler:
    """The command line's handler on the `scaledyolo` logger (replacing one installed before)."""
    for old in [h for h in LOGGER.handlers if isinstance(h, _StderrHandler)]:
        LOGGER.removeHandler(old)
    handler = _StderrHandler(level)
    handler.setFormatter(_CliFormatter())
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)
    return handler


def _file_of(item: str | Mapping[str, str]) -> str:
    return item if isinstance(item, str) else str(item.get("image") or item.get("file"))


def summarize_files(command: str, skipped: Iterable[str | Mapping[str, str]],
                    used_with_warning: Iterable[str | Mapping[str, str]] = ()) -> str | None:
    """The end-of-command line: how many files were skipped (and used with a warning), the first few named.

    Items are paths or problem records `{file, image, problem}` (the image is named). Logged as a
    warning and returned; None (and nothing logged) when no file was skipped or warned about.
    """
    parts = []
    for files, what in ((list(skipped), "skipped"), (list(used_with_warning), "used with a warning")):
        names = list(dict.fromkeys(_file_of(f) for f in files))
        if names:
            more = f" and {len(names) - SHOWN_FILES} more" if len(names) > SHOWN_FILES else ""
            parts.append(f"{len(names)} file(s) {what} ({', '.join(names[:SHOWN_FILES])}{more})")
    if not parts:
        return None
    line = f"{command}: " + "; ".join(parts) + "; the reasons are above"
    LOGGER.warning(line)
    return line
