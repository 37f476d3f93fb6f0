"""The options every command shares, spelled one way: `--model`/`--weights` (one meaning), `--img`/`--imgsz`,
`--device` (the GPU when there is one), `--precision` with int8's calibration options (predict, val,
bench), and the parser that answers an unknown option with the
sub-command's own usage and a "did you mean" hint.

Kept beside the commands (not in `cli.py`) so the parser stays argparse calls and the vocabulary has
one definition that the tests read back from the sub-parsers.
"""

from __future__ import annotations

import argparse
import difflib
from typing import Any, Sequence

from scaledyolo.calibration import DEFAULT_LIMIT
from scaledyolo.devices import INFERENCE_PRECISIONS

MODEL_HELP = "member name ({members}), spec YAML or weights file (ours, darknet .cfg, official .pt); a member name " \
             "gives random weights"
DEVICE_HELP = "cpu, 0, 0,1, cuda:0 ... (default: the first GPU when there is one, else the CPU)"
PRECISION_HELP = ("fp32 (default, exact), bf16 (our fast path in bfloat16: AMX/AVX512-BF16 CPUs or a GPU), fp16 (GPU), "
                  "int8 (CPU only: our network quantised by NNCF on calibration pictures, run by OpenVINO; "
                  "needs scaledyolo[openvino]; quantising takes seconds to minutes)")


def add_model(p: argparse.ArgumentParser, members: str, required: bool = False, dest: str = "weights",
              help: str | None = None) -> None:
    """`--model` and `--weights` as one option: the same destination, the same meaning."""
    p.add_argument("--weights", "--model", dest=dest, required=required, default=None, metavar="MODEL",
                   help=help or MODEL_HELP.format(members=members))


def add_img(p: argparse.ArgumentParser, default: int | None, help: str) -> None:
    """`--img` with ultralytics' spelling `--imgsz` as an alias."""
    p.add_argument("--img", "--imgsz", dest="img", type=int, default=default, metavar="PIXELS", help=help)


def add_device(p: argparse.ArgumentParser) -> None:
    """`--device`, default None for every command: `devices.select_device` then picks the first GPU."""
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def add_precision(p: argparse.ArgumentParser, default: str | None, calibrated_on: str,
                  help: str = PRECISION_HELP, data: bool = False) -> None:
    """`--precision` (choices `devices.INFERENCE_PRECISIONS`), `--calib DIR`, `--calib-images N` and with
    `data` a `--data YAML` whose val split calibrates; int8's calibration default (`calibrated_on`) is the
    command's own."""
    p.add_argument("--precision", default=default, choices=INFERENCE_PRECISIONS, help=help)
    p.add_argument("--calib", default=None, metavar="DIR",
                   help=f"with --precision int8: folder of calibration images (default: {calibrated_on})")
    if data:
        p.add_argument("--data", default=None, help="with --precision int8: data YAML whose val split calibrates")
    p.add_argument("--calib-images", type=int, default=None, metavar="N",
                   help=f"with --precision int8: calibrate on at most N pictures, spread over the set "
                        f"(default {DEFAULT_LIMIT})")


def did_you_mean(option: str, parser: argparse.ArgumentParser) -> str:
    """' (did you mean --xyz?)' for the closest option `parser` knows, or '' when none is close."""
    known = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    close = difflib.get_close_matches(option.split("=", 1)[0], known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose unknown options are reported by the sub-command that was called, with its
    usage and a hint, instead of by the top-level parser (argparse's default: the top usage, no hint)."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # noqa: D102
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            subparsers = getattr(parsed, "_subparsers", {})
            owner = subparsers.get(getattr(parsed, "command", None), self)
            unknown = next((e for e in extras if e.startswith("-")), extras[0])
            owner.error(f"unrecognized arguments: {' '.join(extras)}{did_you_mean(unknown, owner)}")
        return parsed
