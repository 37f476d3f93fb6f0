"""Importing the optional components the tests need: a skip on a developer's machine, a failure in CI.

The README names the optional extras (`.[export]`: onnx, onnxruntime, onnxscript; `.[openvino]`:
openvino, nncf); CI installs `.[test]`, which holds all of them, so there a missing component is a
broken environment, and a skipped test would hide it.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

OPTIONAL = {"onnx": "export", "onnxruntime": "export", "onnxscript": "export", "openvino": "openvino", "nncf": "openvino"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(module: str) -> ModuleType:
    """The module, or: fail (CI, or a component the README does not call optional) / skip (elsewhere)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = OPTIONAL.get(module)
        message = f"{module} is not installed ({exc}); pip install -e '.[test]'"
        if extra is None or in_ci():
            pytest.fail(f"{message} - it is required {'in CI' if extra else 'by the test suite'}", pytrace=False)
        pytest.skip(f"{message} (optional: the '{extra}' extra)")
