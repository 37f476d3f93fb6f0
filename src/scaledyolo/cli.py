"""Command line: argument parsing only. Every command calls the Python API a user would import.

Errors from the API (`scaledyolo.errors.ScaledYoloError`) become one line ``error: FILE: what``
with exit code 2 (bad input) or 1 (other failure); ``--verbose`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import Any, Callable

from scaledyolo.errors import ScaledYoloError

MEMBERS_HELP = "yolov4-tiny, yolov4-csp, yolov4-p5, yolov4-p6, yolov4-p7"


def print_json(data: Any) -> None:
    """Print machine-readable output on stdout (one JSON document)."""
    print(json.dumps(data, indent=2, default=float))


# --------------------------------------------------------------------------- handlers


def cmd_info(args: argparse.Namespace) -> int:
    from scaledyolo.models.analysis import format_report, model_report, paper_report, format_paper_report

    if args.paper:
        report = paper_report()
        print_json(report) if args.json else print(format_paper_report(report))
        return 0
    if not args.model:
        raise _usage("info needs a model name or weights file (or --paper)")
    report = model_report(args.model, img_size=args.img)
    print_json(report) if args.json else print(format_report(report))
    return 0


# --------------------------------------------------------------------------- parser


def _usage(message: str) -> ScaledYoloError:
    from scaledyolo.errors import UserError

    return UserError(message)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="show the full traceback on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaledyolo",
        description="Scaled-YOLOv4 object detection: build, train, evaluate, detect, convert, export, benchmark.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}

    p = sub.add_parser("info", help="parameters, GFLOPs, per-stage table and CIO of a model",
                       description="Show parameters, GFLOPs (2 x multiply-accumulates) at --img, a per-stage table "
                                   "(params, GFLOPs, output shape, activation memory) and the paper's CIO. "
                                   f"MODEL is a member name ({MEMBERS_HELP}), a spec YAML or a weights file.")
    p.add_argument("model", nargs="?", help="member name, spec YAML or weights file")
    p.add_argument("--img", type=int, default=None, help="input size in pixels (default: the member's native size)")
    p.add_argument("--json", action="store_true", help="print JSON (params, gflops, stages, ...)")
    p.add_argument("--paper", action="store_true",
                   help="reproduce the paper's FLOPs analysis of CSP-ized ResNet/ResNeXt/Darknet layers and OSA CIO")
    handlers["info"] = cmd_info

    for p in sub.choices.values():
        _add_common(p)
    parser.set_defaults(_handlers=handlers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    handler = args._handlers[args.command]
    try:
        return int(handler(args) or 0)
    except ScaledYoloError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
