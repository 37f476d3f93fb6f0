"""scaledyolo: Scaled-YOLOv4 (tiny, CSP, P5, P6, P7) in pure PyTorch.

Public API: `build_model`, `load`, `ModelSpec`, `__version__`.
"""

import os as _os

# OpenMP threads waiting at a barrier sleep instead of spinning (set before torch loads libgomp).
# On a busy or shared CPU, spinning threads take the cores from the thread all the others wait for:
# measured 4-15x slower median CPU inference under load (benchmarks/README.md). Set it to override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scaledyolo.models.spec import ModelSpec  # noqa: E402
from scaledyolo.models.yolo import build_model  # noqa: E402

__version__ = "0.1.0"


def load(path, **kwargs):
    """Load a model from our checkpoint, a darknet .cfg (+ .weights) or an official Scaled-YOLOv4 .pt."""
    from scaledyolo.interop.loading import load_model

    return load_model(path, **kwargs)


__all__ = ["build_model", "load", "ModelSpec", "__version__"]
