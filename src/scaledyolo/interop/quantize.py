"""int8 post-training quantisation of an OpenVINO graph with NNCF, calibrated on the user's pictures.

NNCF (`nncf.quantize`, OpenVINO's own quantiser) runs the float graph on the calibration images,
records each activation's range and inserts int8 quantise/dequantise pairs around convolutions
(weights per channel, activations per tensor; the MIXED preset: symmetric weights, asymmetric
activations, which suits the asymmetric ranges Leaky/Mish leave) and NNCF's full bias correction
(each layer's bias re-fitted on the calibration pictures; its default fast correction lost 1.9 points
mAP@.5:.95 on a finetuned yolov4-tiny, the full one none: benchmarks/precision_accuracy.py). The post-processing (box decoding and
NMS, `openvino.postprocess_nodes`) stays float. How much accuracy int8 costs depends on the model and
the images: measure it (`tests/test_export_formats.py` checks box agreement on a real photo).
"""

from __future__ import annotations

import logging
import sys
from contextlib import redirect_stdout
from typing import Sequence

import numpy as np

from scaledyolo.errors import UserError
from scaledyolo.interop.openvino import ov, postprocess_nodes

try:
    import nncf
except ImportError:
    raise UserError("int8 export needs NNCF: pip install 'scaledyolo[openvino]'") from None

nncf.set_log_level(logging.WARNING)  # its INFO lines name every node it leaves alone


def quantize_int8(model: "ov.Model", samples: Sequence[np.ndarray]) -> "ov.Model":
    """An int8 copy of `model`, calibrated on `samples` (each a float32 `(1, 3, H, W)` 0-1 RGB batch)."""
    if not samples:
        raise UserError("int8 calibration needs at least one image")
    scope = nncf.IgnoredScope(names=postprocess_nodes(model), validate=False)
    with redirect_stdout(sys.stderr):  # its progress bars; stdout stays for --json
        return nncf.quantize(model, nncf.Dataset(list(samples)), preset=nncf.QuantizationPreset.MIXED,
                             subset_size=len(samples), ignored_scope=scope, fast_bias_correction=False)
