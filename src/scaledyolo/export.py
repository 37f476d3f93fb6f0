"""Convert and export (`scaledyolo convert`, `scaledyolo export`, `Detector.export`): any weights in, our
checkpoint or a deployment format out. Above `data/` (int8 calibration reads a data YAML), so it sits
with the library floor rather than in `interop/`, whose writers it drives.

Output paths come from the user's arguments only (`--output`, else the weights argument's own stem),
never from a name stored in the weights file, and are checked before anything is loaded: an output
that is one of the inputs is refused, another existing file is replaced with a note
(`scaledyolo.files.check_outputs`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaledyolo.calibration import DEFAULT_LIMIT, calibration_files, calibration_samples
from scaledyolo.errors import UserError
from scaledyolo.files import check_outputs, plain_name
from scaledyolo.interop.checkpoint import save_checkpoint
from scaledyolo.interop.darknet import export_darknet
from scaledyolo.interop.loading import load_model
from scaledyolo.interop.onnx import export_onnx, export_torchscript
from scaledyolo.interop.onnx_nms import DEFAULT_CONF, DEFAULT_IOU, NMSOptions
from scaledyolo.models.spec import round_img_size
from scaledyolo.models.yolo import YOLO
from scaledyolo.ops.nms import MAX_DET

EXPORT_FORMATS = ("onnx", "torchscript", "darknet", "openvino")


def input_files(source: str | Path, weights: str | Path | None = None) -> list[Path]:
    """Every file loading `source` reads: a darknet cfg also reads the `.weights` and `.names` beside it."""
    source = Path(source)
    files = [source] + ([Path(weights)] if weights is not None else [])
    if source.suffix.lower() == ".cfg":
        files += [source.with_suffix(".weights"), source.with_suffix(".names")]
    return files


def convert(source: str | Path, weights: str | Path | None = None, output: str | Path | None = None) -> Path:
    """Darknet cfg(+weights) or official `.pt` -> our checkpoint (written atomically); returns its path."""
    output = Path(output) if output else Path(source).with_name(Path(source).stem + "-scaledyolo.pt")
    check_outputs([output], input_files(source, weights))
    model = load_model(source, weights=weights)
    save_checkpoint(output, model, extra={"converted_from": str(source)})
    return output


def export(weights: str | Path | YOLO, format: str = "onnx", output: str | Path | None = None, img: int | None = None,
           dynamic: bool = False, half: bool = False, nms: bool = False, conf: float = DEFAULT_CONF,
           iou: float = DEFAULT_IOU, max_det: int = MAX_DET, int8: bool = False, data: str | Path | None = None,
           calib: str | Path | None = None, calib_images: int | None = None) -> list[Path]:
    """Export a model to ONNX, TorchScript, darknet cfg+weights or OpenVINO IR; returns the written files.

    `img` is rounded up to a multiple of the model's max stride (default: the model's native size).
    `nms` (onnx, openvino) ends the graph in predict's NMS with `conf`, `iou`, `max_det`. `int8`
    (openvino) quantises with NNCF, calibrated on up to `calib_images` (default 300) pictures of
    `data`'s val split or of the folder `calib`. Darknet files are `OUTPUT/STEM.cfg` and
    `OUTPUT/STEM.weights`, STEM the weights argument's stem (never a name stored in the file); a model
    object (`Detector.export`) is exported as it is, named after its member. An existing folder as
    `output` receives the default file name (the CLI passes its numbered run folder, runs/export/exp).
    """
    if format not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {format!r}; choose from {', '.join(EXPORT_FORMATS)}")
    if nms and format not in ("onnx", "openvino"):
        raise UserError("--nms puts NMS into an ONNX or OpenVINO graph; use --format onnx or openvino")
    if int8 and format != "openvino":
        raise UserError("--int8 is for --format openvino (post-training quantisation with NNCF)")
    if int8 and half:
        raise UserError("choose one of --half and --int8")
    if not int8 and (data is not None or calib is not None or calib_images is not None):
        raise UserError("--data, --calib and --calib-images choose int8 calibration images; add --int8")
    nms_options = NMSOptions(conf, iou, max_det) if nms else None
    given = isinstance(weights, YOLO)
    stem = plain_name(weights.spec.name if given else Path(weights).stem, "weights file name")
    if format == "darknet":
        if half or dynamic:
            raise UserError("darknet export writes float32 weights at the cfg's size; drop --half/--dynamic")
        folder = Path(output or f"{stem}-darknet")
        outputs = [folder / f"{stem}.cfg", folder / f"{stem}.weights"]
    else:
        if img is not None and img < 0:
            raise UserError(f"--img {img} must be positive")
        if format == "torchscript" and dynamic:
            raise UserError("TorchScript export is traced at one size; --dynamic is for ONNX")
        default = f"{stem}{'-int8' if int8 else '-fp16' if half else ''}.xml" if format == "openvino" \
            else f"{stem}.{format}"
        outputs = [Path(output) / default if output and Path(output).is_dir() else Path(output or default)]
        if format == "openvino" and outputs[0].suffix.lower() == ".xml":
            outputs.append(outputs[0].with_suffix(".bin"))
    check_outputs(outputs, ([] if given else input_files(weights)) + [data])
    model = weights if given else load_model(weights)
    if format == "darknet":
        return list(export_darknet(model, folder, stem=stem))
    size = round_img_size(img or model.spec.img_size, model.spec.max_stride)
    if format == "onnx":
        return [export_onnx(model, outputs[0], img=size, dynamic=dynamic, half=half, nms=nms_options)]
    if format == "openvino":
        return _export_openvino(model, outputs[0], size, dynamic, half, nms_options,
                                _calibration(data, calib, calib_images, size, model) if int8 else None)
    return [export_torchscript(model, outputs[0], img=size, half=half)]


def _calibration(data: str | Path | None, calib: str | Path | None, limit: int | None, size: int,
                 model: YOLO) -> list[np.ndarray]:
    """int8 calibration batches (see `scaledyolo.calibration`), read before the slow conversion starts."""
    files = calibration_files(data, calib)
    return calibration_samples(files, size, model.spec.max_stride, DEFAULT_LIMIT if limit is None else limit)


def _export_openvino(model: YOLO, output: str | Path, size: int, dynamic: bool, half: bool,
                     nms: NMSOptions | None, calibration: list[np.ndarray] | None) -> list[Path]:
    # OpenVINO and NNCF are optional and heavy (a second or more to import): loaded only for this format
    from scaledyolo.interop.openvino import ir_paths, save_openvino, to_openvino

    ir_paths(output)  # a bad name fails before the slow part
    graph = to_openvino(model, size, dynamic=dynamic, nms=nms)
    if calibration is not None:
        from scaledyolo.interop.quantize import quantize_int8

        graph = quantize_int8(graph, calibration)
    return save_openvino(graph, output, half=half)
