"""Hyper-parameters: the built-in `scratch` / `finetune` recipes, or a YAML file giving any subset of keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaledyolo.errors import UserError
from scaledyolo.safe_yaml import read_yaml

CFG_DIR = Path(__file__).parent / "cfg"
BUILTIN = {"scratch": CFG_DIR / "hyp.scratch.yaml", "finetune": CFG_DIR / "hyp.finetune.yaml"}


def _read(path: Path) -> dict[str, Any]:
    data = read_yaml(path, "hyper-parameter file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError("expected a mapping of hyper-parameter names to numbers", path)
    return data


def load_hyp(source: str | Path | dict[str, Any] | None = "scratch") -> dict[str, float]:
    """The full hyper-parameter dict: `scratch` defaults overlaid with the recipe, file or dict given."""
    hyp = _read(BUILTIN["scratch"])
    if source is None or source == "scratch":
        return hyp
    if isinstance(source, dict):
        overrides, origin = source, "hyp"
    elif str(source) in BUILTIN:
        overrides, origin = _read(BUILTIN[str(source)]), BUILTIN[str(source)]
    else:
        overrides, origin = _read(Path(source)), source
    unknown = sorted(set(overrides) - set(hyp))
    if unknown:
        raise UserError(f"unknown hyper-parameter(s): {', '.join(unknown)}", origin)
    for key, value in overrides.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UserError(f"{key} must be a number, got {value!r}", origin)
        hyp[key] = float(value)
    return hyp
