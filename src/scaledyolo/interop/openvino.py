"""Export to OpenVINO IR (`.xml` graph + `.bin` weights): fp32, fp16 weights, or int8 (see `interop.quantize`).

The IR is converted from our ONNX export (`interop.onnx`), so it has the same input `images` (float
`(B, 3, H, W)` RGB scaled to 0-1) and the same outputs: `output` `(B, N, 5 + nc)`, or with `nms`
`detections` and `num_detections` (`interop.onnx_nms`). fp16 stores the weights in half precision
(`compress_to_fp16`); the runtime decompresses them and computes at the device's precision.

Precision at run time is the device's choice, not the file's: on CPUs with AMX or AVX512-BF16
OpenVINO computes in bf16 by default, which moves boxes by pixels. For our fp32 results, compile
with ``{"INFERENCE_PRECISION_HINT": "f32"}`` (`COMPILE_F32`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from scaledyolo.errors import RunError, UserError
from scaledyolo.files import atomic_path
from scaledyolo.interop.onnx import export_onnx
from scaledyolo.interop.onnx_nms import NMSOptions

try:
    import openvino as ov
except ImportError:
    raise UserError("openvino is not installed: pip install 'scaledyolo[openvino]'") from None

if TYPE_CHECKING:
    from scaledyolo.models.yolo import YOLO

COMPILE_F32 = {"INFERENCE_PRECISION_HINT": "f32"}
POSTPROCESS_STOP = ("Convolution", "Constant", "Parameter")


def to_openvino(model: "YOLO", img: int, dynamic: bool = False, nms: NMSOptions | None = None) -> "ov.Model":
    """The model as an in-memory OpenVINO graph (through a temporary ONNX export, BatchNorm folded)."""
    with tempfile.TemporaryDirectory(prefix="scaledyolo-openvino-") as folder:
        onnx_file = export_onnx(model, Path(folder) / "model.onnx", img=img, dynamic=dynamic, nms=nms)
        return ov.convert_model(str(onnx_file))


def postprocess_nodes(model: "ov.Model") -> list[str]:
    """Names of the ops between the last convolutions and the outputs: box decoding (and NMS).

    Walking back from each output until a convolution (or its bias addition) is reached finds them in
    any member's graph. Quantisation leaves them in float: pixel coordinates and probabilities share
    one tensor there, and int8 steps over a 0-640 range would move boxes by pixels.
    """
    names: list[str] = []
    seen: set[str] = set()
    stack = list(model.get_results())
    while stack:
        node = stack.pop()
        for port in node.inputs():
            source = port.get_source_output().get_node()
            name = source.get_friendly_name()
            if name in seen:
                continue
            seen.add(name)
            kind = source.get_type_name()
            is_bias = kind == "Add" and source.input(0).get_source_output().get_node().get_type_name() == "Convolution"
            if kind in POSTPROCESS_STOP or is_bias:
                continue
            names.append(name)
            stack.append(source)
    return names


def ir_paths(output: str | Path) -> tuple[Path, Path]:
    """The `.xml` an IR is named by and the `.bin` OpenVINO reads beside it."""
    xml = Path(output)
    if xml.suffix.lower() != ".xml":
        raise UserError("an OpenVINO IR is named NAME.xml (its weights go to NAME.bin beside it)", xml)
    return xml, xml.with_suffix(".bin")


def save_openvino(model: "ov.Model", output: str | Path, half: bool = False) -> list[Path]:
    """Write `output` (.xml) and the `.bin` beside it atomically (weights first); returns both paths."""
    xml, weights = ir_paths(output)
    with atomic_path(xml, suffix=".xml") as tmp_xml, atomic_path(weights) as tmp_bin:
        written_bin = tmp_xml.with_suffix(".bin")
        try:
            ov.save_model(model, str(tmp_xml), compress_to_fp16=half)
            os.replace(written_bin, tmp_bin)
        except RuntimeError as exc:
            raise RunError(f"OpenVINO could not write the IR: {str(exc).strip().splitlines()[0][:300]}", xml) from exc
        finally:
            written_bin.unlink(missing_ok=True)
    return [xml, weights]
