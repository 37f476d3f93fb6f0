"""The Scaled-YOLOv4 family: specs, layers, assembly and analysis."""

from scaledyolo.models.spec import MEMBERS, ModelSpec, get_spec
from scaledyolo.models.yolo import YOLO, Detect, build_model

__all__ = ["MEMBERS", "ModelSpec", "get_spec", "YOLO", "Detect", "build_model"]
