"""`scaledyolo val`: COCO metrics of a model on a data split (`scaledyolo.eval.validate.run_val`), as a table
or JSON."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scaledyolo.commands.common import show
from scaledyolo.eval.validate import run_val
from scaledyolo.runs import new_run_dir


def run(args: argparse.Namespace) -> int:
    plots, save_json = args.plots, args.save_json
    if "" in (plots, save_json):  # --plots / --save-json without a path: the numbered run folder
        run_dir = new_run_dir(args.project, args.name)
        plots = run_dir if plots == "" else plots
        save_json = run_dir / "predictions.json" if save_json == "" else save_json
        print(f"val: results in {run_dir}", file=sys.stderr)
    result = run_val(args.weights, args.data, img=args.img, batch=args.batch, conf=args.conf, iou=args.iou,
                     split=args.split, save_json=save_json, tta=args.tta, subnet=args.subnet, plots=plots,
                     device=args.device, workers=args.workers, progress=not args.json, verbose=args.verbose,
                     geometry=args.geometry, precision=args.precision, calib=args.calib,
                     calib_images=args.calib_images)
    show(json_summary(result), format_table(result), args.json)
    return 0


def format_table(result: dict[str, Any]) -> str:
    """The human-readable report: all/per-class images, labels, P, R, mAP50, mAP50-95; AP by size; speed."""
    head = f"{'Class':>20}{'Images':>10}{'Labels':>10}{'P':>10}{'R':>10}{'mAP50':>10}{'mAP50-95':>10}"
    lines = [head, f"{'all':>20}{result['images']:>10}{result['labels']:>10}{result['precision']:>10.3f}"
                   f"{result['recall']:>10.3f}{result['map50']:>10.3f}{result['map']:>10.3f}"]
    for row in result["per_class"]:
        if row["labels"]:
            lines.append(f"{row['name'][:20]:>20}{row['images']:>10}{row['labels']:>10}{row['precision']:>10.3f}"
                         f"{row['recall']:>10.3f}{row['ap50']:>10.3f}{row['ap']:>10.3f}")
    lines.append(f"mAP75 {result['map75']:.3f}")
    if result.get("map_small") is not None:
        lines.append(f"AP small {result['map_small']:.3f}   AP medium {result['map_medium']:.3f}   "
                     f"AP large {result['map_large']:.3f}   (pycocotools, IoU 0.50:0.95)")
    s = result["speed"]
    lines.append(f"Speed: {s['inference_ms']:.1f} ms inference, {s['nms_ms']:.1f} ms NMS, {s['total_ms']:.1f} ms total "
                 f"per image at {result.get('img', '?')} px {result.get('geometry', '')} "
                 f"{result.get('inference_precision', '')}".rstrip())
    return "\n".join(lines)


def json_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What `val --json` prints: every figure (0-1 floats), without the raw predictions."""
    skip = {"predictions", "image_ids", "confusion_matrix"}
    return {k: v for k, v in result.items() if k not in skip}
