"""The facade users import: `Detector`, `load`, `build_model` (the package root re-exports them).

`Detector(model)` is an ordinary object (not an `nn.Module`, as ultralytics' `YOLO` is not) holding the
network in `.model`. Each method is the very library function the matching CLI command calls, handed
this detector's model, so the Python API and the CLI cannot drift apart:

    det.predict(pictures)            scaledyolo.predict.predict     -> list[Results]      (det(pictures) too)
    det.predict(source, save=True)   scaledyolo.predict.run_predict -> summary dict       (`scaledyolo predict`)
    det.val(data)                    scaledyolo.eval.validate.run_val -> metrics dict     (`scaledyolo val`)
    det.train(data)                  scaledyolo.train.trainer.train -> run folder         (`scaledyolo train`)
    det.export(format)               scaledyolo.export.export       -> written files      (`scaledyolo export`)
    det.info()                       scaledyolo.models.analysis.model_report -> dict      (`scaledyolo info`)
    det.bench()                      scaledyolo.bench.benchmark     -> timing dict        (`scaledyolo bench`)

`load(path)` and `build_model(name)` keep their contract: they return the eval-mode `YOLO` nn.Module
(whose `.train()` is PyTorch's mode switch), with this floor's `predict` attached as its predictor,
so `load(w)("bus.jpg")` detects while models/ never imports predict/ (see `YOLO.__call__`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from scaledyolo.bench import benchmark
from scaledyolo.devices import select_device
from scaledyolo.errors import UserError
from scaledyolo.eval.validate import run_val
from scaledyolo.export import export
from scaledyolo.interop.loading import load_model, resolve_model
from scaledyolo.models.analysis import model_report
from scaledyolo.models.spec import ModelSpec
from scaledyolo.models.yolo import YOLO
from scaledyolo.models.yolo import build_model as build_network
from scaledyolo.predict import Results, predict, run_predict
from scaledyolo.train.trainer import train


def with_predictor(model: YOLO) -> YOLO:
    """`model`, able to detect on pictures (`model("a.jpg")`, `model.predict(...)`); returns it."""
    model.predictor = predict
    return model


def load(path: str | Path, **kwargs: Any) -> YOLO:
    """Load a model from our checkpoint, a darknet .cfg (+ .weights) or an official Scaled-YOLOv4 .pt
    (`scaledyolo.interop.loading.load_model`): eval mode, with `.names`, callable on pictures."""
    return with_predictor(load_model(path, **kwargs))


def build_model(name_or_spec: str | ModelSpec, num_classes: int | None = None) -> YOLO:
    """A member by name (yolov4-tiny, -csp, -p5, -p6, -p7) or from a `ModelSpec`, with random weights."""
    return with_predictor(build_network(name_or_spec, num_classes))


class Detector:
    """A detector made from a member name, a spec YAML, a weights file (any format `load` reads) or a
    `YOLO`; `device` defaults to the first GPU, else the CPU. See the module docstring for the methods."""

    def __init__(self, model: str | Path | YOLO, device: str | torch.device | None = None) -> None:
        self.source = None if isinstance(model, YOLO) else str(model)
        self.model = with_predictor(resolve_model(model, device=select_device(device)))

    def __repr__(self) -> str:
        return f"Detector({self.source or self.model.spec.name!r}, {len(self.names)} classes)"

    @property
    def names(self) -> list[str]:
        return list(self.model.names)

    def __call__(self, images: Any, **kwargs: Any) -> list[Results]:
        return self.predict(images, **kwargs)

    def predict(self, images: Any, save: bool = False, **kwargs: Any) -> list[Results] | dict[str, Any]:
        """Detect on paths, folders, globs, videos, arrays or PIL images -> one `Results` per picture
        (`scaledyolo.predict.predict` options). `save=True` is `scaledyolo predict` instead: pictures,
        videos, labels and JSON written to a run folder (`run_predict` options), its summary returned.
        Both take `precision` ("fp32", "bf16", "fp16" on a GPU, "int8" on the CPU) and, for int8,
        `calib` (a folder), `data` (a data YAML's val split) and `calib_images` (see `scaledyolo.precision`)."""
        if save:
            return run_predict(self.model, images, **kwargs)
        return predict(self.model, images, **kwargs)

    def val(self, data: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
        """COCO metrics on a data YAML's split (`run_val` options; default data: the one our checkpoint
        was trained on). The model takes the data YAML's class names. `precision` as in `predict`; int8
        calibrates on `calib` or else the data YAML's train split."""
        return run_val(self.model, data, **kwargs)

    def train(self, data: str | Path, **kwargs: Any) -> Path:
        """Train on a data YAML (`scaledyolo.train.trainer.train` options): a member name or spec YAML
        trains from scratch, a weights file finetunes its own architecture. Afterwards `.model` is the
        run's best.pt; returns the run folder."""
        if self.source is None:
            raise UserError("Detector.train needs a member name, a spec YAML or a weights file to start from; "
                            "save this model with scaledyolo.interop.checkpoint.save_checkpoint first")
        is_file = Path(self.source).is_file() and Path(self.source).suffix.lower() not in (".yaml", ".yml")
        run_dir = train(model=None if is_file else self.source, weights=self.source if is_file else None,
                        data=str(data), **kwargs)
        best = run_dir / "weights" / "best.pt"
        if best.is_file():
            self.source = str(best)
            self.model = load(best, device=next(self.model.parameters()).device)
        return run_dir

    def export(self, format: str = "onnx", **kwargs: Any) -> list[Path]:
        """Write the model as onnx, openvino, torchscript or darknet (`scaledyolo.export.export` options);
        a detector read from a weights file exports that file, named after it."""
        is_file = self.source is not None and Path(self.source).is_file()
        return export(self.source if is_file else self.model, format=format, **kwargs)

    def info(self, img: int | None = None) -> dict[str, Any]:
        """Parameters, GFLOPs at `img`, the per-stage table and CIO (`model_report`)."""
        return model_report(self.model, img_size=img)

    def bench(self, **kwargs: Any) -> dict[str, Any]:
        """Latency, images/s and the fraction of the machine's peak (`scaledyolo.bench.benchmark` options;
        `precision="int8"` with `calib`/`data`, else random calibration pictures)."""
        return benchmark(self.model, **kwargs)
