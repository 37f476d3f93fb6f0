"""Issue 12's check: finetuning the released yolov4-tiny weights vs training from scratch, same budget.

    python benchmarks/finetune.py [--epochs 15] [--img 320] [--batch 16] [--out runs/finetune]
                                  [--only finetune|scratch]

The path most users take, through the CLI as they would type it:

    scaledyolo convert yolov4-tiny.cfg yolov4-tiny.weights -o tiny.pt
    scaledyolo train --weights tiny.pt --hyp finetune --data raccoon.yaml ...
    scaledyolo train --model yolov4-tiny --hyp scratch --data raccoon.yaml ...   (the baseline)

Data: the 200-image raccoon set (VOC XML) split by sorted file name, the first 160 images for
training and the last 40 for validation, copied under OUT/data with its data YAML (the source is
never written to). Both runs get the same epochs, image size, batch and seed, on the CPU; each is
scored on the 40 held-out images with `scaledyolo val --json` (pycocotools). Prints the CPU model,
the load average before and after, the seconds per epoch and the val mAP50 / mAP50-95 of both.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATASET = SHARED / "datasets" / "raccoon"
CFG, WEIGHTS = SHARED / "weights" / "yolov4-tiny.cfg", SHARED / "weights" / "yolov4-tiny.weights"
N_TRAIN = 160


def cpu_model() -> str:
    """The `Model name` line of lscpu (the figures are only comparable on the same CPU)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return f"{names[0] if names else 'unknown CPU'}, {os.cpu_count()} logical CPUs"


def make_split(src: Path, out: Path) -> Path:
    """Copy the fixed split (sorted names: first 160 train, last 40 val) as VOC folders; return its YAML."""
    images = sorted((src / "images").glob("*.jpg"))
    for split, files in (("train", images[:N_TRAIN]), ("val", images[N_TRAIN:])):
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "annotations").mkdir(parents=True, exist_ok=True)
        for img in files:
            shutil.copy2(img, out / split / "images" / img.name)
            shutil.copy2(src / "annotations" / f"{img.stem}.xml", out / split / "annotations" / f"{img.stem}.xml")
    yaml_path = out / "raccoon.yaml"
    yaml_path.write_text(f"path: {out.resolve()}\n"
                         "train: {images: train/images, annotations: train/annotations}\n"
                         "val: {images: val/images, annotations: val/annotations}\n"
                         "names: [raccoon]\n")
    return yaml_path


def scaledyolo(*args: str, capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "scaledyolo", *args]
    print("$ scaledyolo " + " ".join(args), flush=True)
    done = subprocess.run(cmd, check=True, text=True, capture_output=capture)
    return done.stdout if capture else ""


def train_and_score(name: str, start: list[str], data: Path, args: argparse.Namespace) -> dict[str, float]:
    """Train one run, then score its best.pt on the held-out split; epoch times from results.csv."""
    t0 = time.time()
    scaledyolo("train", *start, "--data", str(data), "--img", str(args.img), "--epochs", str(args.epochs),
               "--batch", str(args.batch), "--device", "cpu", "--workers", str(args.workers), "--seed", "0",
               "--project", str(args.out), "--name", name)
    minutes = (time.time() - t0) / 60
    run = max(args.out.glob(f"{name}*"), key=lambda p: p.stat().st_mtime)
    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epoch_s = sorted(float(r["time_s"]) for r in rows)
    metrics = json.loads(scaledyolo("val", "--weights", str(run / "weights" / "best.pt"), "--data", str(data),
                                    "--img", str(args.img), "--device", "cpu", "--json", capture=True))
    per_epoch = [round(float(r["metrics/mAP50"]), 3) for r in rows]
    print(f"{name}: val mAP50 per epoch (EMA, during training): {per_epoch}", flush=True)
    best_epoch = 1 + max(range(len(rows)), key=lambda i: float(rows[i]["fitness"]))
    return {"map50": metrics["map50"], "map": metrics["map"], "minutes": minutes,
            "epoch_s_median": epoch_s[len(epoch_s) // 2], "best_epoch": best_epoch}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--img", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/finetune"))
    ap.add_argument("--only", choices=["finetune", "scratch"], help="run one of the two")
    args = ap.parse_args()
    for need in (DATASET / "images", CFG, WEIGHTS):
        if not need.exists():
            print(f"error: {need}: not found (the shared dataset and released weights are needed)", file=sys.stderr)
            return 2

    print(f"CPU: {cpu_model()}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    data = make_split(DATASET, args.out / "data")
    tiny = args.out / "yolov4-tiny.pt"
    scaledyolo("convert", str(CFG), str(WEIGHTS), "-o", str(tiny))
    starts = {"finetune": ["--weights", str(tiny), "--hyp", "finetune"],
              "scratch": ["--model", "yolov4-tiny", "--hyp", "scratch"]}
    results = {name: train_and_score(name, start, data, args) for name, start in starts.items()
               if args.only in (None, name)}

    print(f"\nyolov4-tiny on raccoon ({N_TRAIN} train / 40 val, sorted names), img {args.img}, {args.epochs} "
          f"epochs, batch {args.batch}, CPU: {cpu_model()}; load average after: {os.getloadavg()[0]:.1f}")
    print("| start | recipe | val mAP50 | val mAP50-95 | best epoch | s/epoch (median) | total min |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        origin = "released COCO weights" if name == "finetune" else "random init"
        print(f"| {origin} | {starts[name][-1]} | {r['map50']:.3f} | {r['map']:.3f} | {r['best_epoch']} | "
              f"{r['epoch_s_median']:.0f} | {r['minutes']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
