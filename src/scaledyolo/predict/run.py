"""A prediction run written to a folder (`scaledyolo predict`, `Detector.predict(..., save=True)`): annotated
pictures and mp4 videos, YOLO labels, box crops, a JSON list, and the summary the CLI prints (objects
counted per class; with `verbose`, one line per picture on stderr).

Pictures stream through one at a time (each frame's image is dropped once drawn), so a long video runs
in constant memory.
"""

from __future__ import annotations

import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from scaledyolo.calibration import predict_calibration
from scaledyolo.devices import select_device
from scaledyolo.errors import UserError
from scaledyolo.files import check_outputs, same_file, write_json
from scaledyolo.interop.loading import load_model
from scaledyolo.logs import summarize_files
from scaledyolo.media import Frame, VideoWriter, count_frames, expand_source, iter_frames, write_image
from scaledyolo.models.yolo import YOLO
from scaledyolo.ops.nms import MAX_DET
from scaledyolo.predict.display import Viewer
from scaledyolo.predict.predictor import Predictor
from scaledyolo.predict.results import Results
from scaledyolo.precision import check_precision_options
from scaledyolo.runs import new_run_dir


def _local_part(path: str) -> Path:
    """A file path as it is; of a URL, its path part (no host, query or fragment)."""
    return Path(urllib.parse.urlsplit(path).path) if "://" in path else Path(path)


def _output_name(frame: Frame, index: int, used: set[str]) -> str:
    """A file stem for a picture's outputs, unique within the run (a.jpg and a.png both come from 'a')."""
    if frame.path is None:
        stem = f"image{index}"
    elif str(frame.path).isdigit():
        stem = f"webcam{frame.path}"
    else:
        stem = _local_part(str(frame.path)).stem or "image"
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}_{n}", n + 1
    used.add(name)
    return name


def _source_name(path: str | None) -> str:
    """The file name a per-picture line shows: a file's or URL's last path part, "webcam0", "array"."""
    if path is None:
        return "array"
    if str(path).isdigit():
        return f"webcam{path}"
    return _local_part(str(path)).name or str(path)


def picture_line(res: Results, index: int, total: int | None) -> str:
    """`--verbose`'s line for one picture: "image 3/20 bus.jpg: 416x416 4 persons, 1 bus, 23.1 ms" (video
    frames: "video clip.mp4 frame 7: ..."); the size is the model input's, the time the model's."""
    where = (f"image {index}/{total}" if total else f"image {index}") if res.frame is None else "video"
    frame = "" if res.frame is None else f" frame {res.frame}"
    h, w = res.input_shape or res.orig_shape
    return (f"{where} {_source_name(res.path)}{frame}: {h}x{w} {res.verbose()}, "
            f"{res.speed.get('model', 0.0):.1f} ms")


def format_counts(counts: dict[str, int]) -> str:
    """Objects per class, by name: "bus 1, person 3" ("none" when nothing was found)."""
    return ", ".join(f"{name} {counts[name]}" for name in sorted(counts)) or "none"


def run_predict(weights: str | Path | YOLO, source: str, img: int | None = None, conf: float = 0.25, iou: float = 0.45,
                classes: Sequence[int | str] | None = None, max_det: int = MAX_DET, save_dir: str | None = None,
                project: str = "runs/predict", name: str = "exp", save_json: str | None = None,
                save_txt: bool = False, save_conf: bool = False, nosave: bool = False, tta: bool = False,
                device: str | None = None, progress: bool = True, geometry: str | None = None, vid_stride: int = 1,
                agnostic_nms: bool = False, line_width: int | None = None, hide_labels: bool = False,
                hide_conf: bool = False, save_crop: bool = False, show: bool = False,
                verbose: bool = False, precision: str = "fp32", calib: str | Path | None = None,
                data: str | Path | None = None, calib_images: int | None = None) -> dict[str, Any]:
    """`scaledyolo predict` and `Detector.predict(..., save=True)`: detect on every picture of `source`
    (weights: any file `load_model` reads, a member name, or a loaded model), write annotated pictures
    and videos (the BGR picture `Results.plot(line_width, not hide_labels, not hide_conf)` gives),
    labels, crops (`Results.save_crop` into crops/CLASS/) and JSON; `show` puts each picture in a
    window where a display exists; `verbose` writes `picture_line` per picture to stderr. `precision`,
    `calib`, `data`, `calib_images`: as `predict.predict` (int8 calibrated on `calib`, `data`'s val
    split, else the source's own pictures).

    Returns the summary (counts, objects per class, folder, per-image milliseconds by stage) that the
    CLI prints.
    """
    if line_width is not None and line_width < 1:
        raise UserError(f"line width must be 1 or more, got {line_width}")
    check_precision_options(precision, device, calib=calib, data=data, calib_images=calib_images)
    items, from_folder = expand_source(source)
    calibration = predict_calibration(items, str(source), calib, data, calib_images) if precision == "int8" else None
    files = [p for p in items if isinstance(p, Path)]
    if save_dir and not nosave and any(same_file(p.parent, save_dir) for p in files):
        raise UserError("--save-dir holds the source pictures: their annotated copies would replace them", save_dir)
    if save_json:
        check_outputs([save_json], files + ([] if isinstance(weights, YOLO) else [Path(weights)]))
    model = weights.to(select_device(device)) if isinstance(weights, YOLO) else load_model(
        weights, device=select_device(device))
    predictor = Predictor(model, conf=conf, iou=iou, img=img, classes=classes, max_det=max_det, tta=tta, fast=True,
                          geometry=geometry, agnostic=agnostic_nms, precision=precision, calibration=calibration)
    out_dir = Path(save_dir) if save_dir else new_run_dir(project, name)
    out_dir.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    records: list[dict[str, Any]] = []
    used: set[str] = set()
    videos: list[str] = []
    skipped: list[str] = []  # unreadable files of a folder or glob
    writer: VideoWriter | None = None  # the video being written (frames of one source come in a row)
    n_images = n_objects = 0
    class_counts: dict[str, int] = {}
    viewer = Viewer() if show else None
    total = count_frames(items, vid_stride)
    bar = tqdm(total=total, desc="predict", unit="img", disable=not progress, file=sys.stderr)
    try:
        for frame in iter_frames(items, skip_bad=from_folder, skipped=skipped, vid_stride=vid_stride):
            (res,) = predictor([frame])
            t0 = time.perf_counter()
            plotted = res.plot(line_width, not hide_labels, not hide_conf) if not nosave or show else None
            if frame.frame == 0 or (frame.frame is None and writer is not None):
                if writer is not None:
                    writer.close()
                writer = None
            if frame.frame is None:
                stem = _output_name(frame, n_images, used)
                if not nosave:
                    suffix = _local_part(str(frame.path)).suffix if frame.path else ".jpg"
                    write_image(out_dir / f"{stem}{suffix}", plotted, bgr=True)
                label_stem = stem
            else:
                if writer is None:
                    writer = VideoWriter(out_dir / f"{_output_name(frame, n_images, used)}.mp4", frame.fps or 30.0)
                    if not nosave:
                        videos.append(str(writer.path))
                if not nosave:
                    writer.write(plotted, bgr=True)
                label_stem = f"{writer.path.stem}_{frame.frame}"
            if save_txt:
                res.save_txt(out_dir / "labels" / f"{label_stem}.txt", save_conf=save_conf)
            if save_crop:
                res.save_crop(out_dir / "crops", file_name=f"{label_stem}.jpg")
            if viewer is not None:
                viewer.show(plotted)
            if save_json:
                records.append({"path": frame.path, "frame": frame.frame, "height": res.orig_shape[0],
                                "width": res.orig_shape[1], "detections": res.summary()})
            res.speed["drawing"] = (time.perf_counter() - t0) * 1e3
            predictor.totals["drawing"] += res.speed["drawing"] / 1e3
            n_images += 1
            n_objects += len(res)
            for c in res.boxes.cls:
                class_counts[res.class_name(c)] = class_counts.get(res.class_name(c), 0) + 1
            if verbose:
                tqdm.write(picture_line(res, n_images, total), file=sys.stderr)
            bar.update(1)
    finally:
        bar.close()
        if viewer is not None:
            viewer.close()
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
        "classes": class_counts,
        "videos": videos,
        "skipped": skipped,
        "save_dir": str(out_dir),
        "save_json": save_json,
        "seconds": round(time.perf_counter() - t_start, 3),
        "ms_per_image": {k: round(v, 2) for k, v in predictor.per_image_ms().items()},
        "img": predictor.size,
        "geometry": predictor.geometry,
        "precision": precision,
    }
