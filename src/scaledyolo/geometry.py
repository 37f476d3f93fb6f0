"""How a picture becomes the network's input, and which way each kind of weights expects.

Both geometries keep the aspect ratio and pad with grey; they differ in the canvas:

- `square`: every picture is letterboxed into `img` x `img`. This is what darknet-born weights are
  used with (OpenCV DNN / darknet at the cfg's width x height): the released yolov4-tiny finds on
  bus.jpg person 0.99, person 0.96 (right edge), bus 0.91 at 416x416, while a 320x416 rectangle
  gives the bus 0.63 and misses the second person.
- `rect`: the smallest stride-multiple rectangle holding the picture with `img` on its long side
  (less padding, faster), as the official Scaled-YOLOv4 detect and test scripts do for their `.pt`
  weights (`val` uses the test script's aspect-sorted batches, padded by half a stride).

Models trained here use `square`: they train on square letterboxed pictures, and on held-out real
data (raccoon, tiny finetuned at 320) the official rectangular val batches score 5.6-8.8 points
lower mAP50 than the square, while one-picture `predict` scores about the same either way
(benchmarks/README.md, `benchmarks/geometry.py`).

Weights carry their geometry (`model.geometry`, the checkpoint's `geometry` key); commands take
`--rect` / `--square` to override it.
"""

from __future__ import annotations

from typing import Any

from scaledyolo.errors import UserError

GEOMETRIES = ("square", "rect")
DARKNET_GEOMETRY = "square"  # darknet cfg + weights, and checkpoints converted from them
OFFICIAL_GEOMETRY = "rect"  # official Scaled-YOLOv4 .pt files (their detect.py and test.py)
TRAINED_GEOMETRY = "square"  # models trained here: benchmarks/geometry.py (rect is not as good in val)


def check_geometry(geometry: Any, source: Any = None) -> str:
    """`geometry` if it is one of GEOMETRIES, else a UserError naming `source` (a file or an argument)."""
    if geometry not in GEOMETRIES:
        raise UserError(f"unknown input geometry {geometry!r}; expected one of {', '.join(GEOMETRIES)}", source)
    return str(geometry)


def model_geometry(model: Any, override: str | None = None) -> str:
    """The geometry to run `model` with: `override` when given, else the one its weights recorded,
    else the geometry of models trained here."""
    if override is not None:
        return check_geometry(override)
    return check_geometry(getattr(model, "geometry", None) or TRAINED_GEOMETRY)
