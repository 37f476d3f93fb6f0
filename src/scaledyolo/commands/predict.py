"""`scaledyolo predict`: detect on a source and write the run folder (`scaledyolo.predict.run_predict`),
then print one summary line with the objects counted per class (or the summary as JSON)."""

from __future__ import annotations

import argparse
from typing import Any

from scaledyolo.commands.common import show
from scaledyolo.predict import STAGES, format_counts, run_predict


def run(args: argparse.Namespace) -> int:
    summary = run_predict(args.weights, args.source, img=args.img, conf=args.conf, iou=args.iou, classes=args.classes,
                          max_det=args.max_det, save_dir=args.save_dir, project=args.project, name=args.name,
                          save_json=args.save_json, save_txt=args.save_txt, save_conf=args.save_conf,
                          nosave=args.nosave, tta=args.tta, device=args.device, progress=not args.json,
                          geometry=args.geometry, vid_stride=args.vid_stride, agnostic_nms=args.agnostic_nms,
                          line_width=args.line_width, hide_labels=args.hide_labels, hide_conf=args.hide_conf,
                          save_crop=args.save_crop, show=args.show, verbose=args.verbose, precision=args.precision,
                          calib=args.calib, data=args.data, calib_images=args.calib_images)
    show(summary, format_summary(summary), args.json)
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    """The one-line summary the CLI prints."""
    ms = summary["ms_per_image"]
    split = ", ".join(f"{k} {ms[k]:.1f}" for k in STAGES)
    return (f"predict: {summary['images']} pictures, {summary['objects']} objects "
            f"({format_counts(summary['classes'])}) in {summary['seconds']:.1f} s at "
            f"img {summary['img']} {summary['geometry']} {summary.get('precision', 'fp32')} (ms per picture: {split}); "
            f"results in {summary['save_dir']}")
