"""Validation of a detector on a data split: predictions in original pixels, metrics, pictures, JSON.

`validate` serves two callers. The trainer calls it every epoch with `coco=False`: our own matcher
(`scaledyolo.eval.metrics`), which follows pycocotools' rules, gives map/map50/map75 quickly. The
`scaledyolo val` command and `Detector.val` (`run_val`) use `coco=True`: the headline figures, per-class AP and AP by
object size come from pycocotools on exactly the results list `--save-json` writes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from scaledyolo.calibration import val_calibration
from scaledyolo.data.dataset import load_data_config
from scaledyolo.data.loader import create_dataloader
from scaledyolo.devices import model_device, select_device, synchronize
from scaledyolo.errors import UserError
from scaledyolo.eval.coco import (category_id_map, coco_evaluate, dataset_category_ids, dataset_ground_truth,
                                  dataset_image_ids, labels_to_xyxy, results_json)
from scaledyolo.eval.metrics import ConfusionMatrix, ap_per_class, match_detections
from scaledyolo.eval.tta import model_output, tta_forward
from scaledyolo.eval.val_plots import PLOT_BATCHES, write_val_plots
from scaledyolo.files import check_outputs, write_json
from scaledyolo.geometry import model_geometry
from scaledyolo.interop.loading import load_model
from scaledyolo.logs import summarize_files
from scaledyolo.models.spec import round_img_size
from scaledyolo.models.yolo import YOLO
from scaledyolo.ops.boxes import scale_boxes
from scaledyolo.ops.nms import non_max_suppression
from scaledyolo.precision import check_precision_options, inference_network

LossFn = Callable[[list[torch.Tensor], torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
LOSS_KEYS = ("val/box_loss", "val/obj_loss", "val/cls_loss", "val/total_loss")  # the order of the loss parts


class _Tally:
    """Per-image predictions and matches, collected over a validation pass."""

    def __init__(self, nc: int) -> None:
        self.confusion = ConfusionMatrix(nc)
        self.seen: list[int] = []
        self.predictions: list[np.ndarray] = []
        self.tps: list[np.ndarray] = []
        self.confs: list[np.ndarray] = []
        self.pred_classes: list[np.ndarray] = []
        self.target_classes: list[np.ndarray] = []
        self.loss_sum = np.zeros(len(LOSS_KEYS))  # sum over batches of the loss parts [box, obj, cls, total]
        self.loss_batches = 0

    def add(self, index: int, det: np.ndarray, gt_cls: np.ndarray, gt_boxes: np.ndarray) -> None:
        kept, tp = match_detections(det, gt_cls, gt_boxes)
        self.tps.append(tp[kept])
        self.confs.append(det[kept, 4])
        self.pred_classes.append(det[kept, 5])
        self.target_classes.append(gt_cls)
        self.confusion.update(det, gt_cls, gt_boxes)
        self.seen.append(index)
        self.predictions.append(det)

    @staticmethod
    def union(shards: Sequence["_Tally"]) -> "_Tally":
        """One tally of several ranks' shards, images in dataset order as one process would add them."""
        entries = sorted(((index, t, k) for t in shards for k, index in enumerate(t.seen)), key=lambda e: e[0])
        out = _Tally(shards[0].confusion.nc)
        out.confusion.matrix = sum((t.confusion.matrix for t in shards), out.confusion.matrix)
        out.loss_sum = sum((t.loss_sum for t in shards), out.loss_sum)
        out.loss_batches = sum(t.loss_batches for t in shards)
        for index, t, k in entries:
            out.seen.append(index)
            for name in ("predictions", "tps", "confs", "pred_classes", "target_classes"):
                getattr(out, name).append(getattr(t, name)[k])
        return out

    def ap(self, order: list[int], nc: int) -> Any:
        """Our matcher's AP, accumulating images in `order` (pycocotools' order ranks tied scores alike)."""
        return ap_per_class(_cat([self.tps[k] for k in order], (0, 10), bool),
                            _cat([self.confs[k] for k in order], (0,)),
                            _cat([self.pred_classes[k] for k in order], (0,)), _cat(self.target_classes, (0,)), nc)


def score_predictions(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray], shapes: Sequence[tuple[int, int]],
                      nc: int) -> Any:
    """Our matcher's `ap_per_class` result for per-image detections (x1, y1, x2, y2, score, class; original
    pixels) against normalised labels [class, cx, cy, w, h] of images of the given (h, w) shapes."""
    tally = _Tally(nc)
    for index, (det, lab, shape) in enumerate(zip(preds, labels, shapes)):
        tally.add(index, det, *labels_to_xyxy(lab, shape))
    return tally.ap(list(range(len(tally.seen))), nc)


@torch.no_grad()
def validate(model: torch.nn.Module, loader: Any, dataset: Any, conf: float = 0.001, iou: float = 0.65,
             max_det: int = 300, tta: bool = False, names: Sequence[str] | None = None,
             plots_dir: str | Path | None = None, save_json: str | Path | None = None, coco: bool = True,
             half: bool = False, category_ids: Sequence[int] | None = None, progress: bool = True,
             verbose: bool = False, gather: bool = False, loss_fn: LossFn | None = None) -> dict[str, Any]:
    """Run `model` over `loader` (batches of the data contract) and score it against `dataset`'s labels.

    Returns map, map50, map75 (pycocotools' when `coco`, else our matcher's), map_small/medium/large
    (pycocotools only, else None), precision and recall at the best mean F1 (IoU 0.5), per_class
    (images, labels, precision, recall, ap50, ap per class), speed (ms per image: inference, nms,
    total), own (our matcher's map/map50/map75), confusion_matrix, image_ids and predictions (per
    image (n, 6) [x1, y1, x2, y2, score, class] in original pixels). `half` runs the forward pass
    under fp16 autocast on CUDA (the model's weights are left as they are). `gather`: under
    torch.distributed, `loader` holds only this rank's shard; every rank runs its own, then all ranks
    score the union (each returns the same figures).

    `loss_fn` (the trainer's `ComputeLoss`): also the validation losses, the mean over batches of its
    parts on the model's raw maps of each batch (the same forward as the detections), as
    val/box_loss, val/obj_loss, val/cls_loss, val/total_loss; the gap to the training losses is how
    overfitting shows. `plots_dir`: write the PR/F1/P/R curves, both confusion matrices and the
    first batches' pictures there (`scaledyolo.eval.val_plots`).
    """
    names = list(names if names is not None else getattr(model, "names", None) or [])
    nc = int(getattr(model, "num_classes", 0) or len(names))
    names = names or [str(i) for i in range(nc)]
    if category_ids is None:
        category_ids = dataset_category_ids(dataset)
    was_training = model.training
    model.eval()
    try:
        tally, speed, batches = _predict_all(model, loader, dataset, tally=_Tally(nc), conf=conf, iou=iou,
                                             max_det=max_det, tta=tta, half=half, progress=progress,
                                             keep=PLOT_BATCHES if plots_dir is not None else 0, loss_fn=loss_fn)
    finally:
        model.train(was_training)
    if gather and dist.is_available() and dist.is_initialized():
        shards: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(shards, tally)
        tally = _Tally.union(shards)

    all_ids = dataset_image_ids(dataset)
    image_ids = [all_ids[i] for i in tally.seen]
    own = tally.ap(sorted(range(len(image_ids)), key=lambda k: (isinstance(image_ids[k], str), image_ids[k])), nc)
    cat_map = category_id_map(names, category_ids)
    jdict = results_json(image_ids, tally.predictions, cat_map) if coco or save_json else []
    if save_json:
        write_json(save_json, jdict)
    images_per_class = np.zeros(nc, dtype=np.int64)
    for tc in tally.target_classes:
        images_per_class[np.unique(tc)] += 1
    per_class = [{"class": c, "name": names[c], "images": int(images_per_class[c]), "labels": int(own.n_gt[c]),
                  "precision": float(own.precision[c]), "recall": float(own.recall[c]),
                  "ap50": float(own.ap[c, 0]), "ap": float(own.ap[c].mean())} for c in range(nc)]
    result: dict[str, Any] = {
        "map": own.map, "map50": own.map50, "map75": own.map75,
        "map_small": None, "map_medium": None, "map_large": None,
        "precision": own.mp, "recall": own.mr, "best_conf": own.best_conf,
        "images": len(tally.seen), "labels": int(own.n_gt.sum()),
        "own": {"map": own.map, "map50": own.map50, "map75": own.map75},
        "coco": None,
    }
    if coco:
        gt = dataset_ground_truth(dataset, names=names, category_ids=category_ids, indices=tally.seen)
        stats = coco_evaluate(gt, jdict, verbose=verbose)
        result.update({k: stats[k] for k in ("map", "map50", "map75", "map_small", "map_medium", "map_large")})
        result["coco"] = {k: v for k, v in stats.items() if k != "per_class"}
        for row, cstats in zip(per_class, stats["per_class"]):
            if cstats["ap"] is not None:
                row["ap"], row["ap50"] = cstats["ap"], cstats["ap50"]
    result.update({"per_class": per_class, "speed": speed, "confusion_matrix": tally.confusion.matrix.tolist(),
                   "image_ids": image_ids, "predictions": tally.predictions})
    if loss_fn is not None:
        mean_loss = tally.loss_sum / max(tally.loss_batches, 1)
        result.update({key: float(value) for key, value in zip(LOSS_KEYS, mean_loss)})
    if plots_dir is not None:
        write_val_plots(Path(plots_dir), own, tally.confusion.matrix, names, batches)
    return result


def _predict_all(model: torch.nn.Module, loader: Any, dataset: Any, tally: _Tally, conf: float, iou: float,
                 max_det: int, tta: bool, half: bool, progress: bool, keep: int, loss_fn: LossFn | None
                 ) -> tuple[_Tally, dict[str, float], list[tuple]]:
    """The inference pass: forward (timed), NMS (timed), boxes back to original pixels, matching; the
    loss parts of each batch into the tally when `loss_fn`; the first `keep` batches kept for pictures."""
    device = model_device(model)
    nc = tally.confusion.nc
    path_index = {str(p): i for i, p in enumerate(dataset.image_files)}
    use_autocast = half and device.type == "cuda"
    t_inf = t_nms = 0.0
    batches: list[tuple] = []
    for imgs, targets, paths, shapes in tqdm(loader, desc="val", unit="batch", disable=not progress, leave=False,
                                             file=sys.stderr):
        x = imgs.to(device, non_blocking=True).float() / 255.0
        synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_autocast):
            if loss_fn is None:
                out = model_output(model, x, tta).float()
            else:
                out, maps = detections_and_maps(model, x, tta)
        synchronize(device)
        t_inf += time.perf_counter() - t0
        if loss_fn is not None:  # outside the timed forward, so the speed figures stay comparable
            _, parts = loss_fn([m.float() for m in maps], targets.to(device))
            tally.loss_sum += parts.detach().cpu().double().numpy()
            tally.loss_batches += 1
        t1 = time.perf_counter()
        dets = non_max_suppression(out, conf_thres=conf, iou_thres=iou, multi_label=nc > 1, max_det=max_det)
        synchronize(device)
        t_nms += time.perf_counter() - t1
        for j, det in enumerate(dets):
            index = path_index.get(str(paths[j]))
            if index is None:
                raise UserError(f"the loader returned an image the dataset does not list: {paths[j]}")
            shape0 = tuple(int(v) for v in shapes[j][0])
            det = det.detach().float().clone()
            scale_boxes(det[:, :4], x.shape[2:], shape0, shapes[j][1])
            tally.add(index, det.cpu().numpy().astype(np.float64), *labels_to_xyxy(dataset.labels[index], shape0))
        if len(batches) < keep:
            batches.append((imgs, targets, paths, shapes, tally.predictions[-len(dets):]))
    per_image = 1000.0 / max(len(tally.seen), 1)
    speed = {"inference_ms": t_inf * per_image, "nms_ms": t_nms * per_image, "total_ms": (t_inf + t_nms) * per_image}
    return tally, speed, batches


def detections_and_maps(model: torch.nn.Module, x: torch.Tensor, tta: bool = False
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The eval-mode detections (float) and the raw per-level maps (the train-mode output) of one forward.

    Our YOLO decodes its own raw maps (`detect.raw` then `detect.decode`), so both come from one pass
    with the eval-mode BatchNorms; a model whose eval forward returns (detections, raw maps), as the
    official ones do, gives both items. With `tta` the detections are the augmented runs' and the maps
    the plain input's.
    """
    detect, features = getattr(model, "detect", None), getattr(model, "features", None)
    if detect is not None and callable(features) and hasattr(model, "levels"):
        maps = detect.raw(features(x), model.levels)
        out = tta_forward(model, x) if tta else detect.decode(maps, model.levels)
        return out.float(), maps
    out = model(x)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise UserError("validation losses need the raw per-level maps: this model returns only its detections")
    return (tta_forward(model, x) if tta else out[0]).float(), list(out[1])


def _cat(parts: list[np.ndarray], empty_shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    return np.concatenate(parts, 0) if parts else np.zeros(empty_shape, dtype=dtype)


def load_for_val(weights: str | Path | YOLO, names: Sequence[str] | None, device: torch.device) -> YOLO:
    """A member name (random initialisation, for speed checks), a weights file `scaledyolo.load` reads or a
    loaded model (`Detector.val`), for the data YAML's classes (whose names it takes; `names` None: the
    data YAML is not read yet)."""
    if isinstance(weights, YOLO):
        if names is not None and weights.num_classes != len(names):
            raise UserError(f"the model is for {weights.num_classes} classes, the data YAML names {len(names)}")
        model = weights.to(device)
    else:
        model = load_model(weights, device=device, num_classes=None if names is None else len(names))
    if names is not None:
        model.names = list(names)
    return model


def stored_data_yaml(model: torch.nn.Module, weights: str | Path | YOLO) -> str:
    """The data YAML a checkpoint was trained on (for `val` without `--data`), or a UserError saying why not."""
    data = getattr(model, "data_yaml", None)
    source = None if isinstance(weights, YOLO) else weights
    if data is None:
        raise UserError("val needs --data DATA.yaml: these weights do not record the data they were trained on",
                        source)
    if not Path(data).is_file():
        raise UserError(f"val needs --data DATA.yaml: the data YAML these weights were trained on ({data}) is "
                        "not there any more", source)
    return data


def run_val(weights: str | Path | YOLO, data: str | Path | None = None, img: int | None = None, batch: int = 32,
            conf: float = 0.001, iou: float = 0.65, split: str = "val", save_json: str | Path | None = None,
            tta: bool = False, subnet: str | None = None, plots: str | Path | None = None,
            device: str | None = None, workers: int = 0, half: bool | None = None, progress: bool = True,
            verbose: bool = False, geometry: str | None = None, precision: str = "fp32",
            calib: str | Path | None = None, calib_images: int | None = None) -> dict[str, Any]:
    """`scaledyolo val` and `Detector.val`: load the model (unless given one) and the split, validate with
    pycocotools' headline figures.

    `data` None: the data YAML our checkpoint was trained on; `img` None: the size it was trained
    at (other weights: the member's native size). `geometry` "rect": letterboxed rectangular batches
    as in the official test script; "square": every image letterboxed to `img` x `img`, as darknet
    infers; default: what the weights recorded. `half` defaults to fp16 autocast on CUDA (fp32 only).
    `precision`: fp32 (default: the model as it is), bf16 or fp16 (our fast path), int8 (CPU, OpenVINO;
    `scaledyolo.precision`), int8 calibrated on up to `calib_images` (default 300) pictures of the
    folder `calib`, else of the data YAML's train split (never the split scored). The result is
    `validate`'s dict plus `names`, `weights`, `data`, `split`, `img`, `geometry`, `inference_precision`
    (`precision` is the metric).
    """
    check_precision_options(precision, device, calib=calib, calib_images=calib_images)
    if half and precision != "fp32":
        raise UserError(f"--half is fp16 autocast of an fp32 model; drop it with --precision {precision}")
    dev = select_device(device)
    if data is None:
        model = load_for_val(weights, None, dev)
        data = stored_data_yaml(model, weights)
        cfg = load_data_config(data)
        cfg.split(split)
        if model.num_classes != len(cfg.names):
            raise UserError(f"the weights are for {model.num_classes} classes, their data YAML names "
                            f"{len(cfg.names)}", data)
        model.names = list(cfg.names)
    else:
        cfg = load_data_config(data)
        cfg.split(split)  # a missing split fails here, before the model is loaded
        model = load_for_val(weights, cfg.names, dev)
    if save_json:
        check_outputs([save_json], [data] if isinstance(weights, YOLO) else [weights, data])
    geometry = model_geometry(model, geometry)
    if subnet:
        model = model.subnet(subnet)
    stride = model.spec.max_stride
    img_size = round_img_size(img or model.spec.img_size, stride)
    calibration = val_calibration(data, calib, calib_images) if precision == "int8" else None
    loader, dataset = create_dataloader(cfg, split, img_size, batch, augment=False, rect=geometry == "rect",
                                        workers=workers, shuffle=False, stride=stride, pin_memory=dev.type == "cuda")
    network = inference_network(model, precision, dev, img_size, calibration, fast=False)
    result = validate(network, loader, dataset, conf=conf, iou=iou, tta=tta, names=cfg.names, plots_dir=plots,
                      save_json=save_json, coco=True,
                      half=dev.type == "cuda" and precision == "fp32" if half is None else half,
                      category_ids=cfg.category_ids, progress=progress, verbose=verbose)
    result.update({"names": list(cfg.names), "weights": weights.spec.name if isinstance(weights, YOLO) else str(weights),
                   "data": str(data), "split": split,
                   "img": img_size, "geometry": geometry, "inference_precision": precision,
                   "subnet": subnet, "tta": tta, "problems": list(getattr(dataset, "problems", []) or [])})
    summarize_files("val", result["problems"], dataset.warned)
    return result
