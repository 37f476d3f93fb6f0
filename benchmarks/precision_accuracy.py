"""What reduced precision costs in accuracy: mAP of fp32 vs bf16 vs int8 on a real held-out split.

    python benchmarks/precision_accuracy.py --weights W --data DATA.yaml --calib TRAIN_IMAGES_DIR
                                            [--img 320] [--batch 8] [--calib-images 160]

DESIGN.md: a reduced-precision path may be the default only if its mAP on a real validation set
stays within 0.3 points of fp32. Every path scores the same square-letterboxed val batches with
`scaledyolo.eval.validate.validate` (pycocotools), so only the arithmetic differs:

- `ours fp32` / `ours bf16`: `prepare_for_inference(model, precision=...)`, our fast path;
- `openvino f32`: our OpenVINO graph (`interop.openvino`) compiled with the f32 hint;
- `ours int8`: what `--precision int8` runs (`precision.int8_network`: NNCF on `--calib` pictures,
  which must not be the validation pictures; the training split's images are the honest choice).

Prints mAP@.5:.95 and mAP@.5 of each path and its difference to ours fp32 in points, and how many
of ours fp32's detections (score >= 0.25) each path finds again (same class, IoU >= 0.9). With
`--agreement-only` the labels are not scored (e.g. the released COCO weights on photos without COCO
labels: the raccoon pictures). No timing here
(benchmarks/compare_cpu.py times the engines, one process each); accuracy does not depend on load.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import scaledyolo  # first: sets the OpenMP wait policy before torch loads

import numpy as np
import torch
from scaledyolo.calibration import Calibration, calibration_files
from scaledyolo.data.dataset import load_data_config
from scaledyolo.data.loader import create_dataloader
from scaledyolo.eval.validate import validate
from scaledyolo.interop.openvino import to_openvino
from scaledyolo.interop.openvino_network import OpenVINONetwork
from scaledyolo.models.inference import prepare_for_inference
from scaledyolo.precision import int8_network
from scaledyolo.ops.boxes import box_iou

AGREE_SCORE, AGREE_IOU = 0.25, 0.9


def agreement(reference: list[np.ndarray], other: list[np.ndarray]) -> tuple[int, float]:
    """Confident reference detections, and the share of them `other` has too (same class, IoU >= 0.9)."""
    found = total = 0
    for ref, det in zip(reference, other):
        ref, det = ref[ref[:, 4] >= AGREE_SCORE], det[det[:, 4] >= AGREE_SCORE]
        total += len(ref)
        if len(ref) and len(det):
            iou = box_iou(torch.from_numpy(ref[:, :4]).double(), torch.from_numpy(det[:, :4]).double()).numpy()
            same = ref[:, 5:6] == det[None, :, 5]
            found += int(((iou >= AGREE_IOU) & same).any(1).sum())
    return total, found / max(total, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="trained weights (any format scaledyolo.load reads)")
    parser.add_argument("--data", required=True, help="data YAML with a real validation split")
    parser.add_argument("--calib", required=True, help="folder of int8 calibration images (not the val images)")
    parser.add_argument("--calib-images", type=int, default=160)
    parser.add_argument("--split", default="val")
    parser.add_argument("--img", type=int, default=None, help="input size (default: the checkpoint's)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--agreement-only", action="store_true", help="the labels are not the model's classes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    model = scaledyolo.load(args.weights)
    img = args.img or model.spec.img_size
    stride = model.spec.max_stride
    names = list(model.names)
    cfg = load_data_config(args.data)
    loader, dataset = create_dataloader(cfg, args.split, img, args.batch, rect=False, stride=stride)
    calibration = Calibration(calibration_files(calib=args.calib), str(args.calib), args.calib_images)
    paths = {
        "ours fp32": prepare_for_inference(model, "cpu", precision="fp32", img_size=img),
        "ours bf16": prepare_for_inference(model, "cpu", precision="bf16", img_size=img),
        "openvino f32": OpenVINONetwork(to_openvino(model, img, dynamic=True), names, model.spec, list(model.strides)),
        "ours int8": int8_network(model, img, calibration),
    }
    rows, predictions = {}, {}
    for label, runner in paths.items():
        r = validate(runner, loader, dataset, names=names, progress=False)
        rows[label] = {"map": 100 * r["map"], "map50": 100 * r["map50"]}
        predictions[label] = r["predictions"]
    base = rows["ours fp32"]
    for label, row in rows.items():
        row["d_map"], row["d_map50"] = row["map"] - base["map"], row["map50"] - base["map50"]
        row["reference_detections"], row["agreement"] = agreement(predictions["ours fp32"], predictions[label])
    if args.json:
        print(json.dumps({"weights": args.weights, "img": img, "images": len(dataset), "rows": rows}, indent=2))
        return 0
    print(f"{args.weights} at {img} px, {len(dataset)} {args.split} images, int8 calibrated on "
          f"{min(len(calibration.pictures), args.calib_images)} pictures of {args.calib}")
    print(f"| path | mAP@.5:.95 | mAP@.5 | vs ours fp32 (points) | of fp32's {base['reference_detections']} "
          f"detections >= {AGREE_SCORE}, found (IoU >= {AGREE_IOU}) |")
    print("|---|---|---|---|---|")
    for label, row in rows.items():
        scores = "- | - | -" if args.agreement_only else (
            f"{row['map']:.2f} | {row['map50']:.2f} | {row['d_map']:+.2f} / {row['d_map50']:+.2f}")
        print(f"| {label} | {scores} | {100 * row['agreement']:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
