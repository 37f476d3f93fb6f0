"""`scaledyolo data`: check a dataset (counts, problems, class and box statistics, anchor fit), optional preview."""

from __future__ import annotations

import argparse

from scaledyolo.commands.common import show
from scaledyolo.data.report import data_report, format_report, write_preview
from scaledyolo.interop.loading import resolve_model
from scaledyolo.models.spec import DEFAULT_MEMBER, resolve_spec


def run(args: argparse.Namespace) -> int:
    model = args.model or DEFAULT_MEMBER  # a weights file's anchors are those of its spec
    spec = resolve_spec(model) or resolve_model(model).spec
    report = data_report(args.data, model=spec, img_size=args.img)
    show(report, format_report(report), args.json)
    if args.preview:
        path = write_preview(args.data, args.preview, img_size=args.preview_img, hyp=args.hyp)
        if not args.json:
            print(f"preview: {path}")
    return 0
