"""Run folders: `P/N`, then `P/N2`, `P/N3` ... so a run never overwrites an earlier one."""

from __future__ import annotations

import os
from pathlib import Path

from scaledyolo.files import plain_name


def increment_path(path: str | Path) -> Path:
    """Create and return the first of `path`, `path2`, `path3`, ... that does not exist yet.

    The folder is claimed atomically (`os.mkdir` fails if another process took it first), so two
    runs started at the same moment still get different folders.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = path if n == 1 else path.with_name(f"{path.name}{n}")
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1


def new_run_dir(project: str | Path, name: str) -> Path:
    """Claim `project/name` (or `name2`, `name3` ...). `name` must be a plain folder name: `..`, `a/b` or
    an absolute path would put the run beside or outside `project` (`..` gave a hidden `project/..2`)."""
    return increment_path(Path(project) / plain_name(name, "run name (--name)"))
