"""Export to ONNX (decoding inside, so the graph's output is our eval output) and TorchScript.

The exported graph takes a float `(B, 3, H, W)` RGB image scaled to 0-1 and returns `(B, N, 5 + nc)`:
cx, cy, w, h in input pixels, objectness, class probabilities, exactly `model.eval()(x)`. NMS stays
outside, as in `scaledyolo.ops.nms`, so any runtime can use it. BatchNorm is folded first.
With `nms` the graph ends in our predict's NMS instead (`interop.onnx_nms` documents its outputs).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from scaledyolo.errors import RunError, UserError
from scaledyolo.files import atomic_path
from scaledyolo.interop.onnx_nms import OUTPUT_NAMES as NMS_OUTPUT_NAMES, NMSHead, NMSOptions

if TYPE_CHECKING:
    from scaledyolo.models.yolo import YOLO

OPSET = 17


def _prepared(model: "YOLO", half: bool) -> "YOLO":
    """A fused eval copy on the CPU (fp16 when asked), with no grid cached from earlier runs."""
    export = copy.deepcopy(model).cpu().eval().fuse()
    export.detect._grids.clear()
    for p in export.parameters():
        p.requires_grad_(False)
    return export.half() if half else export


def _check_size(model: "YOLO", img: int | None) -> int:
    """`img`, or the model's own size (for our checkpoints: the training size), checked against the stride."""
    img = model.spec.img_size if img is None else img
    stride = model.spec.max_stride
    if img <= 0 or img % stride:
        raise UserError(f"--img {img} must be a positive multiple of the model's max stride {stride}")
    return img


def export_onnx(model: "YOLO", output: str | Path, img: int | None = None, dynamic: bool = False, half: bool = False,
                batch: int = 1, opset: int = OPSET, nms: NMSOptions | None = None) -> Path:
    """Write an ONNX model (input `images`, output `output`) traced at `img` (default: the model's size,
    for our checkpoints the training size); `dynamic` makes batch, height and width free.

    With `nms`, the outputs are `detections` and `num_detections` (see `interop.onnx_nms`).
    """
    output = Path(output)
    img = _check_size(model, img)
    if opset < 17:
        raise UserError(f"opset {opset} is too old; use 17 or newer")
    export = _prepared(model, half)
    x = torch.zeros(batch, 3, img, img, dtype=torch.float16 if half else torch.float32)
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 1: "anchors"}} if dynamic else None
    output_names = ["output"]
    if nms is not None:
        export, output_names = NMSHead(export, nms), list(NMS_OUTPUT_NAMES)
        axes = {"images": axes["images"], **{name: {0: "batch"} for name in output_names}} if dynamic else None
    try:
        with atomic_path(output) as tmp:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(export, (x,), str(tmp), input_names=["images"], output_names=output_names,
                                  opset_version=opset, dynamic_axes=axes, do_constant_folding=True, dynamo=False)
            _check_onnx(tmp)
    except UserError:
        raise
    except Exception as exc:  # the exporter raises many types; report one line
        raise RunError(f"ONNX export failed: {str(exc).strip().splitlines()[0][:300]}", output) from exc
    return output


def _check_onnx(path: Path) -> None:
    try:
        import onnx
    except ImportError:
        return
    onnx.checker.check_model(str(path))


def export_torchscript(model: "YOLO", output: str | Path, img: int | None = None, half: bool = False) -> Path:
    """Write a traced and frozen TorchScript module (fixed input size `img`, default the model's)."""
    output = Path(output)
    img = _check_size(model, img)
    export = _prepared(model, half)
    x = torch.zeros(1, 3, img, img, dtype=torch.float16 if half else torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(export, (x,), check_trace=False))
    with atomic_path(output) as tmp:
        traced.save(str(tmp))
    return output
