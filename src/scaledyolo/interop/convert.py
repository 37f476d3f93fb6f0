"""`scaledyolo convert` and `scaledyolo export`: any weights in, our checkpoint or a deployment format out."""

from __future__ import annotations

from pathlib import Path

from scaledyolo.errors import UserError
from scaledyolo.interop.loading import load_model
from scaledyolo.models.spec import round_img_size

EXPORT_FORMATS = ("onnx", "torchscript", "darknet")


def convert(source: str | Path, weights: str | Path | None = None, output: str | Path | None = None) -> Path:
    """Darknet cfg(+weights) or official `.pt` -> our checkpoint (written atomically); returns its path."""
    from scaledyolo.train.checkpoint import save_checkpoint

    model = load_model(source, weights=weights)
    output = Path(output) if output else Path(source).with_name(Path(source).stem + "-scaledyolo.pt")
    if output.resolve() == Path(source).resolve():
        raise UserError("the output would overwrite the input; pass -o OUT.pt", output)
    save_checkpoint(output, model, extra={"converted_from": str(source)})
    return output


def export(weights: str | Path, format: str = "onnx", output: str | Path | None = None, img: int | None = None,
           dynamic: bool = False, half: bool = False) -> list[Path]:
    """Export a model to ONNX, TorchScript or darknet cfg+weights; returns the written files.

    `img` is rounded up to a multiple of the model's max stride (default: the model's native size).
    """
    if format not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {format!r}; choose from {', '.join(EXPORT_FORMATS)}")
    model = load_model(weights)
    stem = Path(weights).stem
    if format == "darknet":
        from scaledyolo.interop.darknet import export_darknet

        if half or dynamic:
            raise UserError("darknet export writes float32 weights at the cfg's size; drop --half/--dynamic")
        return list(export_darknet(model, output or Path(f"{stem}-darknet")))
    if img is not None and img < 0:
        raise UserError(f"--img {img} must be positive")
    size = round_img_size(img or model.spec.img_size, model.spec.max_stride)
    if format == "onnx":
        from scaledyolo.interop.onnx import export_onnx

        return [export_onnx(model, output or f"{stem}.onnx", img=size, dynamic=dynamic, half=half)]
    from scaledyolo.interop.onnx import export_torchscript

    if dynamic:
        raise UserError("TorchScript export is traced at one size; --dynamic is for ONNX")
    return [export_torchscript(model, output or f"{stem}.torchscript", img=size, half=half)]
