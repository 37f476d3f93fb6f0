"""One exception type for user-facing failures, so the CLI can print one line and exit cleanly.

Raise `UserError` (bad input, exit 2) or `RunError` (a failure that is not the input's fault, exit 1)
with the offending file when there is one; `cli.main` turns them into ``error: FILE: what`` lines.
"""

from __future__ import annotations

import re
from pathlib import Path

# C0 and C1 control characters (ESC starts terminal escape sequences), DEL, and the line/paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """`text` safe for one terminal line: control characters (escape sequences, newlines) shown as `\\xNN`.

    Messages quote file names and file contents; a hostile one must not recolour or rewrite the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        text)


class ScaledYoloError(Exception):
    """Base of the errors the CLI reports as one line without a traceback."""

    exit_code = 1

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        text = f"{self.path}: {message}" if self.path else message
        super().__init__(printable(text))


class UserError(ScaledYoloError):
    """The user's input (a file, a name, an option) is wrong: exit code 2."""

    exit_code = 2


class RunError(ScaledYoloError):
    """Something failed that is not the input's fault: exit code 1."""

    exit_code = 1
