"""`scaledyolo predict`: detect on a source and write the run folder (`scaledyolo.predict.run_predict`),
then print one summary line (or the summary as JSON)."""

from __future__ import annotations

import argparse
from typing import Any

from scaledyolo.commands.common import show
from scaledyolo.predict import STAGES, run_predict


def run(args: argparse.Namespace) -> int:
    summary = run_predict(args.weights, args.source, img=args.img, conf=args.conf, iou=args.iou, classes=args.classes,
                          max_det=args.max_det, save_dir=args.save_dir, project=args.project, name=args.name,
                          save_json=args.save_json, save_txt=args.save_txt, save_conf=args.save_conf,
                          nosave=args.nosave, tta=args.tta, device=args.device, progress=not args.json,
                          geometry=args.geometry)
    show(summary, format_summary(summary), args.json)
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    """The one-line summary the CLI prints."""
    ms = summary["ms_per_image"]
    split = ", ".join(f"{k} {ms[k]:.1f}" for k in STAGES)
    return (f"predict: {summary['images']} pictures, {summary['objects']} objects in {summary['seconds']:.1f} s at "
            f"img {summary['img']} {summary['geometry']} (ms per picture: {split}); results in {summary['save_dir']}")
