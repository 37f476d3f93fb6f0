"""scaledyolo: Scaled-YOLOv4 (tiny, CSP, P5, P6, P7) in pure PyTorch.

Public API: `build_model`, `load`, `ModelSpec`, `__version__`.
"""

from scaledyolo.models.spec import ModelSpec
from scaledyolo.models.yolo import build_model

__version__ = "0.1.0"


def load(path, **kwargs):
    """Load a model from our checkpoint, a darknet .cfg (+ .weights) or an official Scaled-YOLOv4 .pt."""
    from scaledyolo.interop.loading import load_model

    return load_model(path, **kwargs)


__all__ = ["build_model", "load", "ModelSpec", "__version__"]
