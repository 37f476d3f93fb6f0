"""scaledyolo: Scaled-YOLOv4 (tiny, CSP, P5, P6, P7) in pure PyTorch.

Public API: `build_model`, `load`, `ModelSpec`, `__version__`.
"""

import os as _os

# OpenMP threads waiting at a barrier spin only briefly (1000 turns), then sleep (set before torch
# loads libgomp). libgomp's default spin (300000 turns) takes the cores from the thread the others
# wait for on a busy or shared CPU: 4-15x slower median CPU inference under load; never spinning
# costs 15% on an idle CPU (benchmarks/README.md). Setting either variable yourself overrides this.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "1000"

from scaledyolo.models.spec import ModelSpec  # noqa: E402
from scaledyolo.models.yolo import build_model  # noqa: E402

__version__ = "0.1.0"


def load(path, **kwargs):
    """Load a model from our checkpoint, a darknet .cfg (+ .weights) or an official Scaled-YOLOv4 .pt."""
    from scaledyolo.interop.loading import load_model

    return load_model(path, **kwargs)


__all__ = ["build_model", "load", "ModelSpec", "__version__"]
