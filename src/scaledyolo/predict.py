"""Detection on pictures: images, folders, globs, videos, webcams, numpy arrays and PIL images -> `Results`.

The pipeline is the official detect's: letterbox to the model's input size (keeping the aspect
ratio, padded grey; into the square or the smallest stride-multiple rectangle, as the weights
expect: see `scaledyolo.geometry`), an eval-mode forward under `torch.inference_mode()`
(optionally with the official test-time augmentation), NMS, and boxes mapped back to the original
pixels and clipped. `predict` returns a list of `Results`; `run_predict` is the `scaledyolo predict`
command (annotated pictures and videos, labels, JSON, a timing summary).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from scaledyolo.devices import synchronize
from scaledyolo.data.augment import letterbox
from scaledyolo.drawing import draw_boxes
from scaledyolo.errors import UserError
from scaledyolo.eval.tta import model_output
from scaledyolo.files import atomic_write_text, check_outputs, same_file, write_json
from scaledyolo.geometry import model_geometry
from scaledyolo.logs import summarize_files
from scaledyolo.media import Frame, VideoWriter, expand_source, iter_frames, write_image
from scaledyolo.ops.boxes import scale_boxes
from scaledyolo.ops.nms import MAX_DET, non_max_suppression

STAGES = ("preprocess", "model", "nms", "drawing")


@dataclass
class Results:
    """Detections on one picture, in its original pixels.

    `boxes` (N, 4) float32 x1, y1, x2, y2; `scores` (N,) float32 (objectness x class probability),
    best first; `classes` (N,) int64; `names` the model's class names; `path` the file (None for
    arrays); `frame` the frame number for videos; `orig_shape` (h, w); `speed` milliseconds per stage.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: list[str]
    orig_shape: tuple[int, int]
    path: str | None = None
    frame: int | None = None
    orig_img: np.ndarray | None = field(default=None, repr=False)
    speed: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.boxes)

    def plot(self, img: np.ndarray | None = None, line_width: int | None = None, labels: bool = True) -> np.ndarray:
        """An RGB copy of the picture (or of `img`) with boxes, class names and scores drawn on it."""
        canvas = (self.orig_img if img is None else img)
        if canvas is None:
            raise ValueError("these results keep no picture; pass img= to plot on")
        return draw_boxes(canvas, self.boxes, self.classes, self.scores, self.names, line_width, labels)

    def class_name(self, cls: int) -> str:
        return self.names[cls] if 0 <= cls < len(self.names) else str(cls)

    def to_json(self) -> list[dict[str, Any]]:
        """One dict per detection: name, class, score, box [x1, y1, x2, y2] in original pixels."""
        return [{"name": self.class_name(int(c)), "class": int(c), "score": round(float(s), 5),
                 "box": [round(float(v), 2) for v in b]}
                for b, s, c in zip(self.boxes, self.scores, self.classes)]

    def save_txt(self, path: str | Path, save_conf: bool = False) -> Path:
        """Write YOLO labels (class cx cy w h, normalised 0-1; plus the score with `save_conf`) atomically."""
        h, w = self.orig_shape
        lines = []
        for b, s, c in zip(self.boxes, self.scores, self.classes):
            cx, cy, bw, bh = (b[0] + b[2]) / 2 / w, (b[1] + b[3]) / 2 / h, (b[2] - b[0]) / w, (b[3] - b[1]) / h
            lines.append(f"{int(c)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}" + (f" {s:.5f}" if save_conf else ""))
        path = Path(path)
        atomic_write_text(path, "\n".join(lines) + "\n" if lines else "")
        return path


def _model_stride(model: torch.nn.Module) -> int:
    spec = getattr(model, "spec", None)
    return int(max(spec.strides)) if spec is not None else 32


def _input_size(model: torch.nn.Module, img: int | None) -> int:
    from scaledyolo.models.spec import round_img_size

    spec = getattr(model, "spec", None)
    size = img or (spec.img_size if spec is not None else 640)
    if size <= 0:
        raise UserError(f"image size must be positive, got {size}")
    return round_img_size(size, _model_stride(model))


def preprocess(images: Sequence[np.ndarray], size: int, stride: int, geometry: str = "rect"
               ) -> tuple[torch.Tensor, list[tuple[tuple[float, float], tuple[float, float]]]]:
    """RGB pictures -> a uint8 (B, 3, H, W) batch and each picture's (ratio, padding).

    `square`: every picture letterboxed into `size` x `size`. `rect`: one picture, or pictures of
    one shape, get the smallest stride-multiple rectangle (less padding, faster, as the official
    detect); mixed shapes share the square.
    """
    boxed = [letterbox(im, size, auto=geometry == "rect", stride=stride) for im in images]
    if geometry == "rect" and len({b[0].shape for b in boxed}) > 1:
        boxed = [letterbox(im, size, auto=False, stride=stride) for im in images]
    batch = np.stack([b[0] for b in boxed]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(batch)), [(b[1], b[2]) for b in boxed]


class Predictor:
    """A model ready to detect: device, input size and thresholds fixed once, then batches of frames.

    `fast` runs a `prepare_for_inference` copy of a YOLO (BN folded, pre-packed convolutions; same
    output to float rounding): about 1.5-2x faster per picture on CPU for a one-off cost of a few
    pictures, paid once per model and weights (the copy is cached until the weights change).
    `geometry` ("square" or "rect"; default: what the weights recorded, see `scaledyolo.geometry`).
    """

    def __init__(self, model: torch.nn.Module, conf: float = 0.25, iou: float = 0.45, img: int | None = None,
                 classes: Sequence[int] | None = None, max_det: int = MAX_DET, tta: bool = False,
                 device: str | torch.device | None = None, keep_images: bool = True, fast: bool = False,
                 geometry: str | None = None) -> None:
        from scaledyolo.devices import select_device
        from scaledyolo.models.yolo import YOLO

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
        if fast and isinstance(model, YOLO) and self.dtype == torch.float32:
            from scaledyolo.models.inference import cached_inference_model

            self.model = cached_inference_model(model, device=self.device, img_size=self.size)
        self.conf, self.iou, self.max_det, self.tta = conf, iou, max_det, tta
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
        dets = non_max_suppression(out.float(), self.conf, self.iou, classes=self.classes, max_det=self.max_det)
        results = []
        for frame, det, ratio_pad in zip(frames, dets, ratio_pads):
            shape = frame.rgb.shape[:2]
            boxes = scale_boxes(det[:, :4].clone(), x.shape[2:], shape, ratio_pad).cpu().numpy()
            results.append(Results(boxes.astype(np.float32), det[:, 4].cpu().numpy().astype(np.float32),
                                   det[:, 5].cpu().numpy().astype(np.int64), self.names, (shape[0], shape[1]),
                                   frame.path, frame.frame, frame.rgb if self.keep_images else None))
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


def predict(model: torch.nn.Module, images: Any, conf: float = 0.25, iou: float = 0.45, img: int | None = None,
            classes: Sequence[int | str] | None = None, max_det: int = MAX_DET, tta: bool = False,
            augment: bool = False, device: str | torch.device | None = None, batch: int = 8,
            fast: bool = True, geometry: str | None = None) -> list[Results]:
    """Detect objects in one picture or a list: paths (an image, a video's frames, a folder, a glob),
    HxWx3 RGB uint8 numpy arrays or PIL images.

    Returns one `Results` per picture, boxes in its original pixels. `img`: input size (default: the
    model's: the size it was trained at for our checkpoints; rounded up to the stride). `geometry`:
    "square" or "rect" input (default: the one the weights recorded; darknet weights: square).
    `classes`: keep only these (indices or names). `tta` (or its alias `augment`): the official
    test-time augmentation. `device`: move the model there first.
    `fast`: run the fused, pre-packed copy of the model (cached; `fast=False` runs the model as it is).
    """
    predictor = Predictor(model, conf=conf, iou=iou, img=img, classes=classes, max_det=max_det,
                          tta=tta or augment, device=device, fast=fast, geometry=geometry)
    items, skip_bad = _as_items(images)
    results: list[Results] = []
    for frames in _batches(iter_frames(items, skip_bad=skip_bad), max(1, batch)):
        results.extend(predictor(frames))
    return results


# --------------------------------------------------------------------------- the CLI command


def _output_name(frame: Frame, index: int, used: set[str]) -> str:
    """A file stem for a picture's outputs, unique within the run (a.jpg and a.png both come from 'a')."""
    if frame.path is None:
        stem = f"image{index}"
    elif str(frame.path).isdigit():
        stem = f"webcam{frame.path}"
    else:
        stem = Path(frame.path).stem
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}_{n}", n + 1
    used.add(name)
    return name


def run_predict(weights: str, source: str, img: int | None = None, conf: float = 0.25, iou: float = 0.45,
                classes: Sequence[int | str] | None = None, max_det: int = MAX_DET, save_dir: str | None = None,
                project: str = "runs/predict", name: str = "exp", save_json: str | None = None,
                save_txt: bool = False, save_conf: bool = False, nosave: bool = False, tta: bool = False,
                device: str | None = None, progress: bool = True, geometry: str | None = None) -> dict[str, Any]:
    """`scaledyolo predict`: detect on every picture of `source`, write annotated pictures/videos.

    Returns the summary (counts, folder, per-image milliseconds by stage) that the CLI prints.
    """
    from scaledyolo.devices import select_device
    from scaledyolo.interop.loading import load_model
    from scaledyolo.media import count_frames
    from scaledyolo.runs import new_run_dir

    items, from_folder = expand_source(source)
    files = [p for p in items if isinstance(p, Path)]
    if save_dir and not nosave and any(same_file(p.parent, save_dir) for p in files):
        raise UserError("--save-dir holds the source pictures: their annotated copies would replace them", save_dir)
    if save_json:
        check_outputs([save_json], files + [Path(weights)])
    model = load_model(weights, device=select_device(device))
    predictor = Predictor(model, conf=conf, iou=iou, img=img, classes=classes, max_det=max_det, tta=tta, fast=True,
                          geometry=geometry)
    out_dir = Path(save_dir) if save_dir else new_run_dir(project, name)
    out_dir.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    records: list[dict[str, Any]] = []
    used: set[str] = set()
    videos: list[str] = []
    skipped: list[str] = []  # unreadable files of a folder or glob
    writer: VideoWriter | None = None  # the video being written (frames of one source come in a row)
    n_images = n_objects = 0
    bar = tqdm(total=count_frames(items), desc="predict", unit="img", disable=not progress, file=sys.stderr)
    try:
        for frame in iter_frames(items, skip_bad=from_folder, skipped=skipped):
            (res,) = predictor([frame])
            t0 = time.perf_counter()
            if frame.frame == 0 or (frame.frame is None and writer is not None):
                if writer is not None:
                    writer.close()
                writer = None
            if frame.frame is None:
                stem = _output_name(frame, n_images, used)
                if not nosave:
                    write_image(out_dir / f"{stem}{Path(frame.path).suffix if frame.path else '.jpg'}", res.plot())
                label_stem = stem
            else:
                if writer is None:
                    writer = VideoWriter(out_dir / f"{_output_name(frame, n_images, used)}.mp4", frame.fps or 30.0)
                    if not nosave:
                        videos.append(str(writer.path))
                if not nosave:
                    writer.write(res.plot())
                label_stem = f"{writer.path.stem}_{frame.frame}"
            if save_txt:
                res.save_txt(out_dir / "labels" / f"{label_stem}.txt", save_conf=save_conf)
            if save_json:
                records.append({"path": frame.path, "frame": frame.frame, "height": res.orig_shape[0],
                                "width": res.orig_shape[1], "detections": res.to_json()})
            res.speed["drawing"] = (time.perf_counter() - t0) * 1e3
            predictor.totals["drawing"] += res.speed["drawing"] / 1e3
            n_images += 1
            n_objects += len(res)
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    summarize_files("predict", skipped)
    if n_images == 0:
        raise UserError("no readable pictures to detect on", source)
    if save_json:
        write_json(save_json, records, indent=1)
    return {
        "images": n_images,
        "objects": n_objects,
        "videos": videos,
        "skipped": skipped,
        "save_dir": str(out_dir),
        "save_json": save_json,
        "seconds": round(time.perf_counter() - t_start, 3),
        "ms_per_image": {k: round(v, 2) for k, v in predictor.per_image_ms().items()},
        "img": predictor.size,
        "geometry": predictor.geometry,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The one-line summary the CLI prints."""
    ms = summary["ms_per_image"]
    split = ", ".join(f"{k} {ms[k]:.1f}" for k in STAGES)
    return (f"predict: {summary['images']} pictures, {summary['objects']} objects in {summary['seconds']:.1f} s at "
            f"img {summary['img']} {summary['geometry']} (ms per picture: {split}); results in {summary['save_dir']}")
