"""The torch we declare is the torch we run on: every version-gated API the package uses exists at
the floor `pyproject.toml` declares (a table of APIs and the release that brought them, scanned for
in the sources; add a row when using a newer API)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# a regular expression for the use in our sources -> the first torch release that has it
FIRST_RELEASE = {
    r"torch\.nn\.utils\.get_total_norm": (2, 6),
    r"torch\.nn\.utils\.clip_grads_with_norm_": (2, 6),
    r"torch\.onnx\.export\(.{0,400}?\bdynamo=": (2, 5),
    r"torch\.serialization\.add_safe_globals": (2, 4),
    r"torch\.amp\.GradScaler": (2, 3),
    r"torch\.nn\.attention": (2, 2),
    r"torch\.compiler\.": (2, 1),
    r"torch\.compile\(": (2, 0),
    r"torch\.cuda\.OutOfMemoryError": (1, 13),
    r"weights_only=": (1, 13),
    r"torch\.inference_mode": (1, 9),
    r"nn\.Mish": (1, 9),
}


def _floor() -> tuple[int, int]:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"torch>=(\d+)\.(\d+)', text)
    assert match, "pyproject.toml declares no torch floor"
    return int(match.group(1)), int(match.group(2))


def _sources() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "src" / "scaledyolo").rglob("*.py")))


def test_declared_floor_has_every_api_we_use() -> None:
    floor, code = _floor(), _sources()
    too_new = {pattern: version for pattern, version in FIRST_RELEASE.items()
               if re.search(pattern, code, flags=re.S) and version > floor}
    assert not too_new, f"torch>={floor[0]}.{floor[1]} lacks {too_new}: raise the floor or use older APIs"


def test_the_table_is_not_stale() -> None:
    """At least the APIs that set the floor are really used (else the floor could come down)."""
    code = _sources()
    used = [version for pattern, version in FIRST_RELEASE.items() if re.search(pattern, code, flags=re.S)]
    assert max(used) == _floor()


def test_this_torch_meets_the_floor() -> None:
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", torch.__version__).groups())
    assert (major, minor) >= _floor()
