"""Command line: argument parsing only. Each sub-command's `run` lives in `scaledyolo.commands` and calls
the library function the facade (`scaledyolo.Detector`) calls; choices are read from the constants
that the library checks against (members, precisions, export formats, backends, splits, geometries).

Errors from the API (`scaledyolo.errors.ScaledYoloError`) become one line ``error: FILE: what``
with exit code 2 (bad input) or 1 (other failure); ``--verbose`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from typing import Callable

import torch

from scaledyolo.bench import BACKENDS
from scaledyolo import __version__
from scaledyolo.commands import bench, data, export, info, predict, train, val, weights
from scaledyolo.commands.options import Parser, add_device, add_img, add_model, add_precision
from scaledyolo.data.dataset import SPLITS
from scaledyolo.devices import TRAIN_PRECISIONS
from scaledyolo.errors import ScaledYoloError, printable
from scaledyolo.export import EXPORT_FORMATS
from scaledyolo.logs import install_cli_handler
from scaledyolo.models.spec import DEFAULT_MEMBER, MEMBERS
from scaledyolo.train.schedule import OPTIMIZERS

MEMBERS_HELP = ", ".join(MEMBERS)


def _add_geometry(p: argparse.ArgumentParser, what: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--rect", dest="geometry", action="store_const", const="rect",
                       help=f"{what} into the smallest stride-multiple rectangle (less padding, faster; the "
                            "official .pt scripts' way and their default)")
    group.add_argument("--square", dest="geometry", action="store_const", const="square",
                       help=f"{what} into --img x --img (darknet's way; the default for darknet weights and for "
                            "models trained here)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="show the full traceback on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="scaledyolo",
        description="Scaled-YOLOv4 object detection: build, train, evaluate, detect, convert, export, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"scaledyolo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}

    p = sub.add_parser("info", help="parameters, GFLOPs, per-stage table and CIO of a model",
                       description="Show parameters, GFLOPs (2 x multiply-accumulates) at --img, a per-stage table "
                                   "(params, GFLOPs, output shape, activation memory) and the paper's CIO. "
                                   f"MODEL is a member name ({MEMBERS_HELP}), a spec YAML or a weights file.")
    p.add_argument("model", nargs="?", help="member name, spec YAML or weights file")
    add_model(p, MEMBERS_HELP, dest="model_option", help="the same as MODEL")
    add_img(p, None, "input size in pixels (default: the member's native size)")
    p.add_argument("--json", action="store_true", help="print JSON (params, gflops, stages, ...)")
    p.add_argument("--paper", action="store_true",
                   help="reproduce the paper's FLOPs analysis of CSP-ized ResNet/ResNeXt/Darknet layers and OSA CIO")
    handlers["info"] = info.run

    p = sub.add_parser("val", help="COCO mAP of a model on a data split (pycocotools)",
                       description="Evaluate a model on a split of a data YAML: mAP@[.5:.95], mAP50, mAP75, AP by "
                                   "object size and per-class AP (all computed by pycocotools), precision/recall "
                                   "at the best F1, optional PR-curve and confusion-matrix pictures.")
    add_model(p, MEMBERS_HELP, required=True)
    p.add_argument("--data", default=None,
                   help="data YAML (default: the one our checkpoint was trained on, if it is still there)")
    add_img(p, None, "inference size in pixels (default: the training size of our checkpoints, else the "
                        "member's native size; rounded up to the stride)")
    p.add_argument("--batch", type=int, default=32, help="batch size")
    p.add_argument("--conf", type=float, default=0.001, help="confidence threshold (keep low for mAP)")
    p.add_argument("--iou", type=float, default=0.65, help="NMS IoU threshold")
    p.add_argument("--split", default="val", choices=SPLITS, help="which split to evaluate")
    p.add_argument("--save-json", nargs="?", const="", metavar="FILE",
                   help="write the COCO results list (original pixels) to FILE (no FILE: the run folder's "
                        "predictions.json)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON (0-1 floats)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: scales 1, 0.83, 0.67 with a flip")
    p.add_argument("--subnet", metavar="LEVELS",
                   help="once-for-all subnet: keep only these output levels, e.g. p7-p7 or p7-p7-p6")
    p.add_argument("--plots", nargs="?", const="", metavar="DIR",
                   help="write PR curves, confusion matrices and batch pictures to DIR (no DIR: the run folder)")
    p.add_argument("--project", default="runs/val", help="parent of the numbered run folder (--plots, --save-json)")
    p.add_argument("--name", default="exp", help="run folder name (exp, exp2, ...)")
    add_device(p)
    p.add_argument("--workers", type=int, default=0, help="data loading worker processes")
    _add_geometry(p, "batches letterboxed")
    add_precision(p, "fp32", "the data YAML's train split, never the split being scored")
    handlers["val"] = val.run

    p = sub.add_parser("data", help="check a dataset: counts, problems, class and box statistics, anchor fit",
                       description="Read and check every split of a data YAML (YOLO, Pascal VOC or COCO layout): usable "
                                   "images, boxes, background images, problems (each bad file and why), per-class box "
                                   "counts, box sizes and the best possible recall of a model's anchors. Results are "
                                   "cached next to the labels until a file changes.")
    p.add_argument("data", help="data YAML")
    p.add_argument("--json", action="store_true", help="print {split: {images, boxes, problems, ...}} as JSON")
    p.add_argument("--preview", metavar="FILE", help="write a picture of one augmented training batch (.png/.jpg)")
    add_model(p, MEMBERS_HELP, dest="model", help=f"whose anchors to fit: member name ({MEMBERS_HELP}), spec "
                                                 f"YAML or weights file (default {DEFAULT_MEMBER})")
    add_img(p, 640, "training size in pixels for the anchor fit")
    p.add_argument("--preview-img", type=int, default=320, help="tile size of the --preview picture")
    p.add_argument("--hyp", default="scratch", help="augmentation recipe for --preview: scratch, finetune or a YAML")
    handlers["data"] = data.run

    p = sub.add_parser("train", help="train a model (one CPU/GPU, or many with torchrun)",
                       description="Train with the official Scaled-YOLOv4 recipe: CIoU + BCE losses, SGD with warmup "
                                   "and cosine schedule, gradient accumulation to a nominal batch of 64, EMA weights, "
                                   "validation each epoch. Writes PROJECT/NAME (then NAME2, ...): weights/last.pt, "
                                   "weights/best.pt, results.csv, results.png, args.yaml, batch pictures, TensorBoard "
                                   "events. Many GPUs or processes: torchrun --nproc_per_node K -m scaledyolo train ...")
    p.add_argument("--model", default=None,
                   help=f"member name ({MEMBERS_HELP}), spec YAML, or weights file to start from "
                        f"(default: the architecture of --weights, else {DEFAULT_MEMBER})")
    p.add_argument("--data", help="data YAML")
    add_img(p, 640, "training and validation size in pixels")
    p.add_argument("--epochs", type=int, default=300, help="number of epochs")
    p.add_argument("--batch", type=int, default=16, help="total batch size (over all processes)")
    add_device(p)
    p.add_argument("--project", default="runs/train", help="folder of the run folders")
    p.add_argument("--name", default="exp", help="run folder name (never overwritten: exp2, exp3 ...)")
    p.add_argument("--weights", help="initial weights (ours, darknet .cfg/.weights, official .pt); layers are "
                                     "matched by name and shape, so another class count is fine")
    p.add_argument("--workers", type=int, default=2, help="data loading worker processes (per process)")
    p.add_argument("--multi-scale", action="store_true", help="vary the image size +-50%% (multiples of the stride)")
    p.add_argument("--freeze", type=int, default=0, help="freeze the first K layers (transfer learning)")
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, augmentation, initialisation)")
    p.add_argument("--noautoanchor", action="store_true", help="keep the model's anchors (no k-means refit)")
    p.add_argument("--precision", default="auto", choices=TRAIN_PRECISIONS,
                   help="auto: fp16 mixed precision on CUDA, fp32 on CPU")
    p.add_argument("--cache", action="store_true", help="cache decoded images in memory")
    p.add_argument("--noval", action="store_true", help="skip validation (best.pt is then the latest epoch)")
    p.add_argument("--close-mosaic", type=int, default=10, metavar="N",
                   help="train the last N epochs without mosaic (at most a third of the run; 0: never)")
    # --- the practitioner's options (issue 15 item 4); commands.train passes each to train()/evolve()
    p.add_argument("--hyp", nargs="+", default=["scratch"], metavar="RECIPE|KEY=VALUE",
                   help="hyper-parameters: scratch, finetune or a YAML file, then KEY=VALUE overrides "
                        "(--hyp finetune lr0=0.002 mosaic=0.5; --hyp lr0=0.02 overrides scratch)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR|last.pt",
                   help="continue an interrupted run where it stopped (no path: the latest run under --project)")
    p.add_argument("--patience", type=int, default=0, metavar="N",
                   help="stop after N epochs without a better fitness (0.1 mAP50 + 0.9 mAP50-95); 0: never")
    p.add_argument("--optimizer", default="SGD", choices=OPTIMIZERS,
                   help="SGD (nesterov, the recipe) or Adam/AdamW as the official --adam: lr0 as given, "
                        "momentum as beta1 (lr0 0.001 suits them: --hyp lr0=0.001)")
    p.add_argument("--single-cls", action="store_true", help="train every object as one class, 'item'")
    lr = p.add_mutually_exclusive_group()
    lr.add_argument("--cos-lr", dest="lr_schedule", action="store_const", const="cos",
                    help="cosine learning-rate decay from lr0 to lr0*lrf (the default)")
    lr.add_argument("--linear-lr", dest="lr_schedule", action="store_const", const="linear",
                    help="linear learning-rate decay from lr0 to lr0*lrf")
    p.set_defaults(lr_schedule="cos")
    p.add_argument("--save-period", type=int, default=0, metavar="N",
                   help="also keep weights/epochN.pt every N epochs (0: only last.pt and best.pt)")
    p.add_argument("--exist-ok", action="store_true", help="write into PROJECT/NAME even if it exists")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic torch kernels: with --seed, repeatable runs (slower)")
    p.add_argument("--rect", action="store_true",
                   help="validate each epoch on rectangular batches (default: square, as val scores our checkpoints)")
    p.add_argument("--evolve", type=int, default=0, metavar="N",
                   help="evolve the hyper-parameters over N short trainings (--epochs each) as the official "
                        "code: PROJECT/NAME/evolve.csv, evolve.png, hyp_evolved.yaml")
    handlers["train"] = train.run_train

    p = sub.add_parser("demo", help="train yolov4-tiny on synthetic shapes in minutes on a CPU and show it",
                       description="No arguments needed: writes a synthetic dataset, trains yolov4-tiny from scratch "
                                   "on the CPU (a few minutes), validates on held-out images, prints mAP50 and "
                                   "mAP50-95 and draws its detections. Everything goes to PROJECT/NAME.")
    p.add_argument("--project", default="runs/demo", help="folder of the demo run folders")
    p.add_argument("--name", default="exp", help="run folder name (exp, exp2 ...)")
    add_device(p)
    p.add_argument("--json", action="store_true", help="print the summary (map50, map, paths) as JSON")
    handlers["demo"] = train.run_demo

    p = sub.add_parser("convert", help="darknet cfg+weights or an official Scaled-YOLOv4 .pt -> our checkpoint",
                       description="Convert darknet .cfg + .weights (any class count) or an official Scaled-YOLOv4 "
                                   ".pt (P5/P6/P7, yaml CSP; read with a restricted unpickler that runs no code) "
                                   "into a scaledyolo checkpoint.")
    p.add_argument("source", help="darknet .cfg or official .pt")
    p.add_argument("weights_file", nargs="?", metavar="WEIGHTS",
                   help="darknet .weights (default: the .weights beside the cfg with the same stem)")
    p.add_argument("-o", "--output", help="output checkpoint (default: SOURCE-scaledyolo.pt); never one of the "
                                          "inputs, an existing other file is replaced (said on stderr)")
    p.add_argument("--json", action="store_true", help="print {output} as JSON")
    handlers["convert"] = export.run_convert

    p = sub.add_parser("export", help="export to ONNX, OpenVINO IR, TorchScript or darknet cfg+weights",
                       description="Export a model for deployment. onnx: opset 17 with box decoding inside (output "
                                   "(B, N, 5+nc): cx, cy, w, h in pixels, objectness, class probabilities; NMS "
                                   "outside); with --nms, predict's NMS inside too (outputs detections (B, max_det, "
                                   "6): x1, y1, x2, y2, score, class, zero rows past num_detections (B,)). openvino: "
                                   "IR NAME.xml + NAME.bin from the same graph, fp32, fp16 (--half) or int8 (--int8, "
                                   "NNCF calibrated on --data's val split or a --calib folder). torchscript: traced "
                                   "and frozen. darknet: cfg + weights (tiny, csp and darknet-cfg models) that "
                                   "convert back bit-exactly.")
    add_model(p, MEMBERS_HELP, required=True)
    p.add_argument("--format", default="onnx", choices=EXPORT_FORMATS,
                   help="output format")
    add_img(p, None, "input size (default: the training size of our checkpoints, else the model's native size; "
                        "rounded up to the stride)")
    p.add_argument("--output", help="output file (onnx, torchscript; openvino: NAME.xml) or folder (there: "
                                    "WEIGHTS-STEM.onnx ...; darknet: WEIGHTS-STEM.cfg and .weights); default the run "
                                    "folder; never one of the inputs, an existing other file is replaced")
    p.add_argument("--project", default="runs/export", help="parent of the numbered run folder (without --output)")
    p.add_argument("--name", default="exp", help="run folder name (exp, exp2, ...)")
    p.add_argument("--dynamic", action="store_true", help="ONNX/OpenVINO: free batch, height and width")
    p.add_argument("--half", action="store_true", help="fp16 weights (ONNX, TorchScript: fp16 input too, for GPUs)")
    p.add_argument("--nms", action="store_true", help="ONNX/OpenVINO: end the graph in predict's NMS (fixed-size "
                                                      "detections plus a count per image)")
    p.add_argument("--conf", type=float, default=0.25, help="with --nms: score threshold (objectness x class prob.)")
    p.add_argument("--iou", type=float, default=0.45, help="with --nms: NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="with --nms: detections per image (rows of the output)")
    p.add_argument("--int8", action="store_true", help="OpenVINO: int8 post-training quantisation (NNCF)")
    p.add_argument("--data", default=None, help="with --int8: data YAML whose val split calibrates")
    p.add_argument("--calib", default=None, metavar="DIR", help="with --int8: folder of calibration images")
    p.add_argument("--calib-images", type=int, default=None, metavar="N",
                   help="with --int8: calibrate on at most N images, spread over the set (default 300)")
    p.add_argument("--json", action="store_true", help="print {files} as JSON")
    handlers["export"] = export.run_export

    p = sub.add_parser("predict", help="detect objects in images, folders, globs, videos or a webcam",
                       description="Letterboxed inference with boxes mapped back to original pixels. Writes "
                                   "annotated pictures (and annotated mp4 videos for video sources) to --save-dir "
                                   "(default runs/predict/exp, exp2, ...), optional YOLO labels and a JSON list, and "
                                   "prints one summary line with the time per picture spent in preprocessing, the "
                                   "model, NMS and drawing, and the objects found per class (--verbose: one line per "
                                   "picture too). Unreadable files in a folder or glob are named and skipped. An "
                                   "http(s) URL ending in an image suffix is read as an image; other URLs and webcam "
                                   "indices are opened as video.")
    add_model(p, MEMBERS_HELP, required=True)
    p.add_argument("--source", required=True, help="image, video, folder, glob ('imgs/*.jpg'), stream URL or webcam "
                                                   "index (0)")
    add_img(p, None, "input size (default: the training size of our checkpoints, else the model's native size; "
                        "rounded up to the stride)")
    _add_geometry(p, "pictures letterboxed")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold (objectness x class probability)")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--classes", nargs="+", default=None, help="keep only these classes (indices or names)")
    p.add_argument("--max-det", type=int, default=300, help="most detections per picture")
    p.add_argument("--save-dir", default=None, help="output folder, used as is (default: --project/--name, numbered)")
    p.add_argument("--project", default="runs/predict", help="parent of the numbered output folder")
    p.add_argument("--name", default="exp", help="output folder name (exp, exp2, ...)")
    p.add_argument("--save-json", default=None, metavar="FILE",
                   help="write a JSON list: per picture its path, frame, size and detections (name, class, score, "
                        "box x1 y1 x2 y2 in original pixels)")
    p.add_argument("--save-txt", action="store_true", help="write YOLO labels (class cx cy w h, 0-1) under labels/")
    p.add_argument("--save-conf", action="store_true", help="with --save-txt, add the score to each label line")
    p.add_argument("--nosave", action="store_true", help="do not write annotated pictures or videos")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (scales 1, 0.83, 0.67; flip)")
    add_device(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON (no progress bar)")
    p.add_argument("--vid-stride", type=int, default=1, metavar="N", help="of videos and streams, every N-th frame")
    p.add_argument("--agnostic-nms", action="store_true", help="boxes of different classes suppress each other")
    p.add_argument("--line-width", type=int, default=None, metavar="PX",
                   help="box line width (default: grows with the picture size)")
    p.add_argument("--hide-labels", action="store_true", help="draw boxes without class names or scores")
    p.add_argument("--hide-conf", action="store_true", help="draw class names without scores")
    p.add_argument("--save-crop", action="store_true", help="write each box cut from its picture under crops/CLASS/")
    p.add_argument("--show", action="store_true",
                   help="show annotated pictures in a window where a display exists (else a warning)")
    add_precision(p, "fp32", "--data's val split, else the source's own pictures; a video, webcam or stream "
                             "source needs --calib or --data", data=True)
    handlers["predict"] = predict.run

    p = sub.add_parser("bench", help="latency, images/s and achieved GFLOP/s vs the machine's measured peak",
                       description="Time the default (fast) inference path or another backend: warm-up calls, then "
                                   "the median of --runs calls on a random batch. Prints latency, images/s, the "
                                   "model's GFLOPs at --img, the GFLOP/s achieved and its fraction of the peak of a "
                                   "same-dtype matrix multiplication measured in the same run.")
    add_model(p, MEMBERS_HELP)
    add_img(p, None, "input size (default: the training size of our checkpoints, else the model's native size; "
                        "rounded up to the stride)")
    p.add_argument("--batch", type=int, default=1, help="images per call")
    add_device(p)
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="torch: our fast path (default); onnxruntime/openvino: our ONNX export on that runtime")
    add_precision(p, None, "--data's val split, else random pictures: then only the speed is meaningful",
                  help="fp32 (default, exact), bf16 (CPU with AVX512-BF16/AMX, or GPU), fp16 (GPU), int8 (CPU: "
                       "what predict/val --precision int8 run, our network quantised by NNCF on OpenVINO, with "
                       "--backend torch, the default, or openvino alike)", data=True)
    p.add_argument("--half", action="store_true", help="16-bit: fp16 on a GPU, bf16 on the CPU")
    p.add_argument("--subnet", default=None, help="time a once-for-all subnet, e.g. p7-p7-p6 (kept output levels)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the fast path (inductor, needs a C++ compiler; compiling takes a while)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, one per core)")
    p.add_argument("--runs", type=int, default=20, help="timed calls (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    p.add_argument("--json", action="store_true", help="print JSON (latency_ms, fps, gflops, peak_fraction, ...)")
    handlers["bench"] = bench.run

    p = sub.add_parser("weights", help="where each member's released weights are published; check a local file",
                       description="A member name used as --weights builds RANDOM weights. This lists each member's "
                                   "officially released weights files: where they are published, their size and "
                                   "sha256 where the publisher gives them (else 'not published'), and how to use or "
                                   "convert them. --verify FILE hashes a local file and says which one it is "
                                   "(exit 1 when it is none of them).")
    p.add_argument("member", nargs="?", default=None, help=f"only this member ({MEMBERS_HELP})")
    p.add_argument("--verify", metavar="FILE", help="say which released file FILE is (sha256, read in chunks)")
    p.add_argument("--json", action="store_true", help="print the list (or the verification) as JSON")
    handlers["weights"] = weights.run

    for p in sub.choices.values():
        _add_common(p)
    parser.set_defaults(_handlers=handlers, _subparsers=sub.choices)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Other libraries' warnings (ours go through logging, see `scaledyolo.logs`) as one short line."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    install_cli_handler()
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
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # not the input's fault: one line unless --verbose
        if args.verbose:
            raise
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            print("error: out of GPU memory; try a smaller --batch or --img", file=sys.stderr)
        elif isinstance(exc, OSError) and exc.filename is not None:  # a file named by the user is unusable
            print(printable(f"error: {exc.filename}: {exc.strerror or exc}"), file=sys.stderr)
            return 2
        else:
            print(printable(f"error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)"),
                  file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
