"""Run folders: `P/N`, then `P/N2`, `P/N3` ... so a run never overwrites an earlier one."""

from __future__ import annotations

import os
from pathlib import Path


def increment_path(path: str | Path, mkdir: bool = True) -> Path:
    """The first of `path`, `path2`, `path3`, ... that does not exist yet (created when `mkdir`).

    With `mkdir` the folder is claimed atomically (`os.mkdir` fails if another process took it
    first), so two runs started at the same moment still get different folders.
    """
    path = Path(path)
    n = 1
    while True:
        candidate = path if n == 1 else path.with_name(f"{path.name}{n}")
        if not mkdir:
            if not candidate.exists():
                return candidate
        else:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(candidate)
                return candidate
            except FileExistsError:
                pass
        n += 1
