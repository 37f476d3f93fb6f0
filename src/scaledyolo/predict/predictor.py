"""Detection on pictures: images, folders, globs, videos, webcams, numpy arrays and PIL images -> `Results`.

The pipeline is the official detect's: letterbox to the model's input size (keeping the aspect
ratio, padded grey; into the square or the smallest stride-multiple rectangle, as the weights
expect: see `scaledyolo.geometry`), an eval-mode forward under `torch.inference_mode()`
(optionally with the official test-time augmentation), NMS, and boxes mapped back to the original
pixels and clipped. `predict` returns a list of `Results`, or with `stream=True` a generator that
yields them batch by batch and keeps none (constant memory over an hour of video);
`scaledyolo.predict.run` writes them into a run folder (the `scaledyolo predict` command).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from scaledyolo.calibration import Calibration, predict_calibration
from scaledyolo.data.augment import preprocess
from scaledyolo.devices import select_device, synchronize
from scaledyolo.errors import UserError
from scaledyolo.eval.tta import model_output
from scaledyolo.geometry import model_geometry
from scaledyolo.media import Frame, expand_source, iter_frames
from scaledyolo.models.spec import round_img_size
from scaledyolo.models.yolo import YOLO
from scaledyolo.ops.boxes import scale_boxes
from scaledyolo.ops.nms import MAX_DET, non_max_suppression
from scaledyolo.precision import check_precision_options, inference_network
from scaledyolo.predict.results import Boxes, Results

STAGES = ("preprocess", "model", "nms", "drawing")


def _model_stride(model: torch.nn.Module) -> int:
    spec = getattr(model, "spec", None)
    return int(max(spec.strides)) if spec is not None else 32


def _input_size(model: torch.nn.Module, img: int | None) -> int:
    spec = getattr(model, "spec", None)
    size = img or (spec.img_size if spec is not None else 640)
    if size <= 0:
        raise UserError(f"image size must be positive, got {size}")
    return round_img_size(size, _model_stride(model))


class Predictor:
    """A model ready to detect: device, input size and thresholds fixed once, then batches of frames.

    `fast` runs a `prepare_for_inference` copy of a YOLO (BN folded, pre-packed convolutions; same
    output to float rounding): about 1.5-2x faster per picture on CPU for a one-off cost of a few
    pictures, paid once per model and weights (the copy is cached until the weights change).
    `geometry` ("square" or "rect"; default: what the weights recorded, see `scaledyolo.geometry`).
    `precision` (fp32, bf16, fp16 on a GPU, int8 on the CPU; `scaledyolo.precision`) runs a YOLO at
    that precision whatever `fast` says; int8 is calibrated on `calibration`'s pictures at the input size.
    """

    def __init__(self, model: torch.nn.Module, conf: float = 0.25, iou: float = 0.45, img: int | None = None,
                 classes: Sequence[int] | None = None, max_det: int = MAX_DET, tta: bool = False,
                 device: str | torch.device | None = None, keep_images: bool = True, fast: bool = False,
                 geometry: str | None = None, agnostic: bool = False, precision: str = "fp32",
                 calibration: Calibration | None = None) -> None:
        if not 0 <= conf <= 1 or not 0 <= iou <= 1:
            raise UserError(f"conf and iou must be within 0-1, got {conf} and {iou}")
        self.model = model if device is None else model.to(select_device(device))
        param = next(self.model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None else torch.float32
        self.names = [str(n) for n in getattr(model, "names", [])] or [str(i) for i in range(model.num_classes)]
        self.classes = None if classes is None else [self._class_index(c) for c in classes]
        self.size = _input_size(model, img)
        self.stride = _model_stride(model)
        self.geometry = model_geometry(model, geometry)
        if precision != "fp32" and not isinstance(model, YOLO):
            raise UserError(f"--precision {precision} needs one of our models, not a {type(model).__name__}")
        if isinstance(model, YOLO) and (precision != "fp32" or (fast and self.dtype == torch.float32)):
            self.model = inference_network(model, precision, self.device, self.size, calibration)
        if max_det < 1:
            raise UserError(f"max_det must be 1 or more, got {max_det}")
        self.conf, self.iou, self.max_det, self.tta, self.agnostic = conf, iou, max_det, tta, agnostic
        self.keep_images = keep_images
        self.totals = dict.fromkeys(STAGES, 0.0)
        self.count = 0

    def _class_index(self, cls: int | str) -> int:
        names = self.names
        if isinstance(cls, str) and not cls.isdigit():
            if cls not in names:
                raise UserError(f"unknown class {cls!r}; the model's classes are {', '.join(names[:10])}"
                                + (" ..." if len(names) > 10 else ""))
            return names.index(cls)
        index = int(cls)
        if not 0 <= index < len(self.names):
            raise UserError(f"class {index} is out of range: the model has {len(self.names)} classes")
        return index

    def __call__(self, frames: Sequence[Frame]) -> list[Results]:
        """Detect on a batch of frames; timings are added to `totals` (seconds)."""
        t0 = time.perf_counter()
        x, ratio_pads = preprocess([f.rgb for f in frames], self.size, self.stride, self.geometry)
        x = x.to(self.device, non_blocking=True).to(self.dtype) / 255.0
        synchronize(self.device)
        t1 = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                out = model_output(self.model, x, self.tta)
        finally:
            self.model.train(was_training)
        synchronize(self.device)
        t2 = time.perf_counter()
        dets = non_max_suppression(out.float(), self.conf, self.iou, classes=self.classes, agnostic=self.agnostic,
                                   max_det=self.max_det)
        results = []
        for frame, det, ratio_pad in zip(frames, dets, ratio_pads):
            shape = frame.rgb.shape[:2]
            boxes = scale_boxes(det[:, :4].clone(), x.shape[2:], shape, ratio_pad).cpu().numpy()
            orig_shape = (int(shape[0]), int(shape[1]))
            results.append(Results(Boxes(boxes, det[:, 4].cpu().numpy(), det[:, 5].cpu().numpy(), orig_shape),
                                   dict(enumerate(self.names)), orig_shape, frame.path, frame.frame,
                                   frame.rgb if self.keep_images else None,
                                   input_shape=(int(x.shape[2]), int(x.shape[3]))))
        t3 = time.perf_counter()
        n = len(frames)
        for res in results:
            res.speed = {"preprocess": (t1 - t0) / n * 1e3, "model": (t2 - t1) / n * 1e3, "nms": (t3 - t2) / n * 1e3}
        self.totals["preprocess"] += t1 - t0
        self.totals["model"] += t2 - t1
        self.totals["nms"] += t3 - t2
        self.count += n
        return results

    def per_image_ms(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) * 1e3 for k, v in self.totals.items()}


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _as_items(images: Any) -> tuple[list[Any], bool]:
    """One image or a list of them -> (a list, whether it came from a folder or glob).

    A path naming a folder or a glob expands to its files; those may be skipped when unreadable.
    """
    if isinstance(images, (str, Path)):
        files, expanded = expand_source(images)
        return list(files), expanded
    if isinstance(images, np.ndarray) or hasattr(images, "convert"):
        return [images], False
    if isinstance(images, (list, tuple)):
        return list(images), False
    raise UserError(f"expected paths, HxWx3 RGB numpy arrays or PIL images, got {type(images).__name__}")


def _source_name(images: Any) -> str:
    """What the calibration line calls predict's pictures: the path or pattern given, else "the given pictures"."""
    return str(images) if isinstance(images, (str, Path)) else "the given pictures"


def _stream(predictor: Predictor, frames: Iterable[Frame], batch: int) -> Iterator[Results]:
    """Results batch by batch; nothing is kept once yielded."""
    for chunk in _batches(frames, batch):
        yield from predictor(chunk)


def predict(model: torch.nn.Module, images: Any, conf: float = 0.25, iou: float = 0.45, img: int | None = None,
            classes: Sequence[int | str] | None = None, max_det: int = MAX_DET, tta: bool = False,
            augment: bool = False, device: str | torch.device | None = None, batch: int = 8,
            fast: bool = True, geometry: str | None = None, stream: bool = False, vid_stride: int = 1,
            agnostic_nms: bool = False, precision: str = "fp32", calib: str | Path | None = None,
            data: str | Path | None = None, calib_images: int | None = None) -> list[Results] | Iterator[Results]:
    """Detect objects in one picture or a list: paths (an image, a video's frames, a folder, a glob),
    HxWx3 RGB uint8 numpy arrays or PIL images.

    Returns one `Results` per picture, boxes in its original pixels. `img`: input size (default: the
    model's: the size it was trained at for our checkpoints; rounded up to the stride). `geometry`:
    "square" or "rect" input (default: the one the weights recorded; darknet weights: square).
    `classes`: keep only these (indices or names). `tta` (or its alias `augment`): the official
    test-time augmentation. `device`: move the model there first.
    `fast`: run the fused, pre-packed copy of the model (cached; `fast=False` runs the model as it is).
    `stream`: return a generator instead of a list (results made batch by batch as it is iterated,
    none kept by predict). `vid_stride`: of videos and streams every N-th frame only. `agnostic_nms`:
    boxes of different classes suppress each other. An http(s) URL ending in an image suffix is read
    as an image (see `scaledyolo.media`); other URLs and webcam indices are opened as video.
    `precision`: fp32 (default), bf16, fp16 (GPU) or int8 (CPU, through OpenVINO; see
    `scaledyolo.precision`), int8 calibrated on the folder `calib`, else `data`'s val split, else the
    pictures themselves (up to `calib_images`, default 300; a video or stream needs `calib` or `data`).
    """
    check_precision_options(precision, device, calib=calib, data=data, calib_images=calib_images)
    items, skip_bad = _as_items(images)
    calibration = predict_calibration(items, _source_name(images), calib, data, calib_images) \
        if precision == "int8" else None
    predictor = Predictor(model, conf=conf, iou=iou, img=img, classes=classes, max_det=max_det,
                          tta=tta or augment, device=device, fast=fast, geometry=geometry, agnostic=agnostic_nms,
                          precision=precision, calibration=calibration)
    if vid_stride < 1:
        raise UserError(f"vid_stride must be 1 or more, got {vid_stride}")
    results = _stream(predictor, iter_frames(items, skip_bad=skip_bad, vid_stride=vid_stride), max(1, batch))
    return results if stream else list(results)
