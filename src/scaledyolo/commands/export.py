"""`scaledyolo convert` and `scaledyolo export` (`scaledyolo.export.convert` / `.export`): say what was written."""

from __future__ import annotations

import argparse
import sys

from scaledyolo.commands.common import show
from scaledyolo.export import convert, export
from scaledyolo.runs import new_run_dir


def run_convert(args: argparse.Namespace) -> int:
    out = convert(args.source, weights=args.weights_file, output=args.output)
    show({"output": str(out)}, f"wrote {out}", args.json)
    return 0


def run_export(args: argparse.Namespace) -> int:
    output = args.output
    if output is None:  # the numbered run folder; export names the files inside it after the weights
        output = new_run_dir(args.project, args.name)
        print(f"export: results in {output}", file=sys.stderr)
    files = export(args.weights, format=args.format, output=output, img=args.img, dynamic=args.dynamic,
                   half=args.half, nms=args.nms, conf=args.conf, iou=args.iou, max_det=args.max_det, int8=args.int8,
                   data=args.data, calib=args.calib, calib_images=args.calib_images)
    show({"files": [str(f) for f in files]}, "wrote " + ", ".join(map(str, files)), args.json)
    return 0
