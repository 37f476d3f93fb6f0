"""Hyper-parameters: the built-in `scratch` / `finetune` recipes, or a YAML file giving any subset of keys,
then `KEY=VALUE` overrides (`--hyp finetune lr0=0.002 mosaic=0.5`, or `--hyp lr0=0.02` over scratch)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scaledyolo.errors import UserError
from scaledyolo.safe_yaml import read_yaml_mapping

CFG_DIR = Path(__file__).parent / "cfg"
BUILTIN = {"scratch": CFG_DIR / "hyp.scratch.yaml", "finetune": CFG_DIR / "hyp.finetune.yaml"}


def _read(path: Path) -> dict[str, Any]:
    return read_yaml_mapping(path, "hyper-parameter file", "expected a mapping of hyper-parameter names to numbers",
                             empty=True)


def _unknown(keys: Sequence[str], known: Sequence[str]) -> str:
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return f"unknown hyper-parameter(s): {', '.join(hints)}"


def parse_overrides(items: Sequence[str], known: Sequence[str]) -> dict[str, float]:
    """`["lr0=0.02", "mosaic=0.5"]` -> {"lr0": 0.02, "mosaic": 0.5}, every key one of `known`."""
    overrides: dict[str, float] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"hyper-parameter override {item!r}: expected KEY=VALUE, e.g. lr0=0.02")
        if key not in known:
            raise UserError(_unknown([key], known))
        try:
            overrides[key] = float(text)
        except ValueError:
            raise UserError(f"hyper-parameter override {item!r}: {text!r} is not a number") from None
    return overrides


def split_hyp_args(items: Sequence[str]) -> tuple[str, list[str]]:
    """CLI `--hyp` words -> (recipe or file, KEY=VALUE overrides); the recipe defaults to scratch."""
    sources = [w for w in items if "=" not in w]
    if len(sources) > 1:
        raise UserError(f"--hyp takes one recipe or file, then KEY=VALUE overrides; got {', '.join(sources)}")
    return (sources[0] if sources else "scratch"), [w for w in items if "=" in w]


def load_hyp(source: str | Path | dict[str, Any] | Sequence[str] | None = "scratch") -> dict[str, float]:
    """The full hyper-parameter dict: `scratch` defaults overlaid with the recipe, file or dict given.

    A list/tuple of words is read as the CLI's `--hyp`: one recipe or file, then KEY=VALUE overrides.
    """
    hyp = _read(BUILTIN["scratch"])
    if isinstance(source, (list, tuple)):
        recipe, items = split_hyp_args([str(w) for w in source])
        hyp = load_hyp(recipe)
        hyp.update(parse_overrides(items, list(hyp)))
        return hyp
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
        raise UserError(_unknown(unknown, list(hyp)), origin)
    for key, value in overrides.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UserError(f"{key} must be a number, got {value!r}", origin)
        hyp[key] = float(value)
    return hyp
