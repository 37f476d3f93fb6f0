"""Darknet cfg text -> sections, with every integer option range-checked (see SECURITY.md).

A cfg is a list of `[type]` sections of `key=value` options; values read from it are checked here,
once, before anything is sized by them: a value outside its range is an error naming its line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scaledyolo.errors import UserError
from scaledyolo.models.spec import MAX_CLASSES, MAX_IMG_SIZE

ACTIVATION_NAMES = {"leaky": "leaky", "mish": "mish", "linear": "linear", "logistic": "logistic",
                    "relu": "relu", "swish": "silu"}
# Range of every integer option we read, whatever the section (see SECURITY.md): darknet's own cfgs stay far
# inside them (filters <= 2048, size <= 13, stride <= 2); a value outside is an error naming its line.
CFG_INT_RANGES = {
    "filters": (1, 4096), "size": (1, 15), "stride": (1, 8), "stride_x": (1, 8), "stride_y": (1, 8),
    "pad": (0, 1), "padding": (0, 15), "groups": (1, 4096), "group_id": (0, 4095), "batch_normalize": (0, 1),
    "classes": (1, MAX_CLASSES), "new_coords": (0, 1), "width": (32, MAX_IMG_SIZE), "height": (32, MAX_IMG_SIZE),
    "channels": (1, 4), "maxpool_depth": (0, 1),
}
MAX_CFG_SECTIONS = 2000  # yolov4-p7-sized cfgs have about 400


@dataclass
class Section:
    """One `[type]` block of a cfg with its `key=value` options and the line it starts on."""

    kind: str
    options: dict[str, str]
    line: int

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def int(self, key: str, default: int, path: str | Path | None = None) -> int:
        value = self.options.get(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise UserError(f"line {self.line}: [{self.kind}] {key}={value!r:.40} is not an integer", path) from None
        low, high = CFG_INT_RANGES.get(key, (-(1 << 31), (1 << 31) - 1))
        if not low <= number <= high:
            raise UserError(f"line {self.line}: [{self.kind}] {key}={number} is out of range ({low} to {high})", path)
        return number

    def float(self, key: str, default: float, path: str | Path | None = None) -> float:
        value = self.options.get(key)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise UserError(f"line {self.line}: [{self.kind}] {key}={value} is not a number", path) from None

    def ints(self, key: str, path: str | Path | None = None) -> list[int]:
        value = self.options.get(key, "")
        try:
            return [int(float(v)) for v in value.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"line {self.line}: [{self.kind}] {key}={value} is not a list of integers", path) from None

    def floats(self, key: str, path: str | Path | None = None) -> list[float]:
        value = self.options.get(key, "")
        try:
            return [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise UserError(f"line {self.line}: [{self.kind}] {key}={value} is not a list of numbers", path) from None


def parse_cfg(text: str, path: str | Path | None = None) -> list[Section]:
    """Split cfg text into sections (comments and blank lines dropped); the first must be [net]."""
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if len(sections) >= MAX_CFG_SECTIONS:
                raise UserError(f"line {number}: more than {MAX_CFG_SECTIONS} sections", path)
            if not line.endswith("]"):
                raise UserError(f"line {number}: unterminated section header {line!r}", path)
            sections.append(Section(line[1:-1].strip().lower(), {}, number))
            continue
        if "=" not in line or not sections:
            raise UserError(f"line {number}: expected key=value inside a [section], got {line!r}", path)
        key, value = line.split("=", 1)
        sections[-1].options[key.strip()] = value.strip()
    if not sections or sections[0].kind not in ("net", "network"):
        raise UserError("not a darknet cfg: it must start with a [net] section", path)
    return sections


