"""scaledyolo: Scaled-YOLOv4 (tiny, CSP, P5, P6, P7) in pure PyTorch.

Public API: `Detector`, `load`, `build_model`, `ModelSpec`, `__version__` (see `scaledyolo.api`).

Floors (each imports only the floors below it; no circle; tests/test_import_graph.py checks both):

    8  cli.py, __main__       argparse only; choices read from the constants below
    7  commands/              one module per command: call the library or the facade, format the output
    6  api, this root         the facade: Detector, load, build_model
    5  train/ eval/ predict/  library: training, validation, prediction (Results)
       bench export calibration precision
    4  data/ media drawing    datasets, pictures and videos in and out, boxes drawn
    3  interop/               checkpoint format, darknet, official .pt, ONNX/OpenVINO; loading by path
    2  models/                spec, layers, architectures, YOLO, analysis, fast inference path
    1  ops/                   boxes, NMS
    0  errors files devices logs safe_yaml geometry hyp runs classes     the ground

The root imports nothing at import time: Python runs this file before any submodule, so
`import scaledyolo.ops.nms` would otherwise load the whole model stack. The facade's names are
looked up on first use (`__getattr__` below), which is a lazy attribute, not an import dodging a
circle: the root sits on the facade floor and may import everything.
"""

from __future__ import annotations

import importlib as _importlib
import os as _os
from typing import TYPE_CHECKING, Any

# OpenMP threads waiting at a barrier spin only briefly (1000 turns), then sleep (set before torch
# loads libgomp). libgomp's default spin (300000 turns) takes the cores from the thread the others
# wait for on a busy or shared CPU: 4-15x slower median CPU inference under load; never spinning
# costs 15% on an idle CPU (benchmarks/README.md). Setting either variable yourself overrides this.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "1000"

if TYPE_CHECKING:
    from scaledyolo.api import Detector, build_model, load
    from scaledyolo.models.spec import ModelSpec

__version__ = "0.1.0"

_FACADE = {"Detector": "scaledyolo.api", "load": "scaledyolo.api", "build_model": "scaledyolo.api",
           "ModelSpec": "scaledyolo.models.spec"}


def __getattr__(name: str) -> Any:
    if name not in _FACADE:
        raise AttributeError(f"module 'scaledyolo' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_FACADE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FACADE))


__all__ = ["Detector", "build_model", "load", "ModelSpec", "__version__"]
