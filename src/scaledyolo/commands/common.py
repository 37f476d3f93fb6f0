"""Output shared by the commands: one JSON document on stdout, or the human-readable text."""

from __future__ import annotations

import json
from typing import Any


def print_json(data: Any) -> None:
    """Print machine-readable output on stdout (one JSON document)."""
    print(json.dumps(data, indent=2, default=float))


def show(data: Any, text: str, as_json: bool) -> None:
    """`data` as JSON with `--json`, else `text`."""
    print_json(data) if as_json else print(text)
