"""One exception type for user-facing failures, so the CLI can print one line and exit cleanly.

Raise `UserError` (bad input, exit 2) or `RunError` (a failure that is not the input's fault, exit 1)
with the offending file when there is one; `cli.main` turns them into ``error: FILE: what`` lines.
"""

from __future__ import annotations

from pathlib import Path


class ScaledYoloError(Exception):
    """Base of the errors the CLI reports as one line without a traceback."""

    exit_code = 1

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class UserError(ScaledYoloError):
    """The user's input (a file, a name, an option) is wrong: exit code 2."""

    exit_code = 2


class RunError(ScaledYoloError):
    """Something failed that is not the input's fault: exit code 1."""

    exit_code = 1
