"""Hyper-parameters: the built-in `scratch` / `finetune` recipes, or a YAML file giving any subset of keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scaledyolo.errors import UserError

CFG_DIR = Path(__file__).parent / "cfg"
BUILTIN = {"scratch": CFG_DIR / "hyp.scratch.yaml", "finetune": CFG_DIR / "hyp.finetune.yaml"}


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("hyper-parameter file not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:  # a folder, no permission, a binary file
        raise UserError(f"cannot read it as a YAML text file ({getattr(exc, 'strerror', None) or exc})", path) from None
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML ({str(exc).splitlines()[0]})", path) from None
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
