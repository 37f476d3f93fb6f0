"""One place that turns a model and a `--precision` into the network predict, val and bench call.

- fp32: our fast path (`cached_inference_model`: BN folded, pre-packed oneDNN convolutions, the same
  output to float rounding), or with `fast=False` the model as it is (what `val` scores in fp32);
- bf16: our fast path in bfloat16 (`prepare_for_inference(precision="bf16")`: AMX / AVX512-BF16),
  boxes decoded in float32; fp16: the same on a GPU only;
- int8: our network exported to OpenVINO (`interop.openvino.to_openvino`, free input size),
  quantised by NNCF on the user's calibration pictures (`interop.quantize.quantize_int8`, box
  decoding kept in float), run by OpenVINO's CPU plugin (`interop.openvino_network.OpenVINONetwork`);
  CPU only. Quantising takes seconds for a few pictures and minutes for the default 300; NNCF's
  progress bars go to stderr, and one log line says what calibrated it.

None of them is the default except fp32 (DESIGN.md: a reduced precision must earn its place; the
costs measured so far are in benchmarks/README.md).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import torch

from scaledyolo.calibration import Calibration
from scaledyolo.devices import INFERENCE_PRECISIONS, check_precision
from scaledyolo.errors import UserError
from scaledyolo.models.inference import cached_inference_model, prepare_for_inference, weights_key
from scaledyolo.models.yolo import YOLO

LOGGER = logging.getLogger("scaledyolo.precision")


def inference_network(model: YOLO, precision: str = "fp32", device: str | torch.device | None = None,
                      img: int | None = None, calibration: Calibration | None = None, fast: bool = True) -> Any:
    """The callable network running `model` at `precision` on `device` (default: the model's own):
    `(B, 3, H, W)` float 0-1 -> `(B, N, 5 + nc)` float, with the model's `names`, `spec`, `strides`.

    `img` is the input size the run uses (the fast path's weight layout; int8's calibration size).
    `calibration`: the pictures int8 is calibrated on (required for int8, unused otherwise).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    check_precision(precision, device, INFERENCE_PRECISIONS)
    img = img or model.spec.img_size
    if precision == "fp32":
        return cached_inference_model(model, device=device, img_size=img) if fast else model
    if precision in ("bf16", "fp16"):
        return prepare_for_inference(model, device, precision=precision, img_size=img)
    if calibration is None:
        raise UserError("--precision int8 needs calibration pictures (--calib DIR or --data YAML)")
    return int8_network(model, img, calibration)


def check_precision_options(precision: str, device: str | torch.device | None = None, **options: Any) -> None:
    """Before anything is loaded: a UserError for an unknown precision, one `device` (as the user spelled
    it) cannot run (`devices.check_precision`), or calibration options (`calib`, `data`, `calib_images`: not None) without int8."""
    check_precision(precision, device, INFERENCE_PRECISIONS)
    given = [name for name, value in options.items() if value is not None]
    if given and precision != "int8":
        spelled = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UserError(f"{spelled}: only for --precision int8 (they choose its calibration pictures)")


_INT8_CACHE: "weakref.WeakKeyDictionary[YOLO, tuple[tuple, Any]]" = weakref.WeakKeyDictionary()


def int8_network(model: YOLO, img: int, calibration: Calibration) -> Any:
    """`model` quantised to int8 by NNCF on `calibration`'s pictures at `img` x `img`, as an `OpenVINONetwork`.

    Quantising takes seconds to minutes, so the last network of each model is kept and reused while
    the weights, the size and the calibration source stay the same (a loop calling
    `Detector.predict(frame, precision="int8")` quantises once, on its first frames).
    """
    # OpenVINO and NNCF are optional and take seconds to import: only int8 loads them
    from scaledyolo.interop.openvino import to_openvino
    from scaledyolo.interop.openvino_network import OpenVINONetwork
    from scaledyolo.interop.quantize import quantize_int8

    key = (img, calibration.source, calibration.limit, weights_key(model))
    hit = _INT8_CACHE.get(model)
    if hit is not None and hit[0] == key:
        LOGGER.info("int8: reusing the network calibrated on %s", calibration.source)
        return hit[1]
    samples = calibration.samples(img, model.spec.max_stride)
    graph = quantize_int8(to_openvino(model, img, dynamic=True), samples)
    LOGGER.info(calibration.describe(len(samples)))
    network = OpenVINONetwork(graph, list(model.names), model.spec, list(model.strides))
    _INT8_CACHE[model] = (key, network)
    return network
