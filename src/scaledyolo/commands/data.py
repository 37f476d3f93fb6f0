"""`scaledyolo data`: check a dataset (counts, problems, class and box statistics, anchor fit), optional preview."""

from __future__ import annotations

import argparse

from scaledyolo.commands.common import show
from scaledyolo.data.report import data_report, format_report, write_preview


def run(args: argparse.Namespace) -> int:
    report = data_report(args.data, model=args.model, img_size=args.img)
    show(report, format_report(report), args.json)
    if args.preview:
        path = write_preview(args.data, args.preview, img_size=args.preview_img, hyp=args.hyp)
        if not args.json:
            print(f"preview: {path}")
    return 0
