"""`scaledyolo info`: parameters, GFLOPs, the per-stage table and CIO of a model, or the paper's analysis."""

from __future__ import annotations

import argparse

from scaledyolo.commands.common import show
from scaledyolo.errors import UserError
from scaledyolo.interop.loading import resolve_model
from scaledyolo.models.analysis import format_paper_report, format_report, model_report, paper_report


def run(args: argparse.Namespace) -> int:
    if args.paper:
        report = paper_report()
        show(report, format_paper_report(report), args.json)
        return 0
    if args.model and args.model_option and args.model != args.model_option:
        raise UserError("info takes one model: MODEL or --model/--weights, not two different ones")
    model = args.model or args.model_option
    if not model:
        raise UserError("info needs a model name or weights file (or --paper)")
    report = model_report(resolve_model(model), img_size=args.img)
    show(report, format_report(report), args.json)
    return 0
