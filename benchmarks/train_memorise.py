"""Issue 6's check: yolov4-tiny from scratch must memorise 16 real images (mAP50 >= 0.6 on them).

    python benchmarks/train_memorise.py [--images 16] [--img 256] [--epochs 150] [--batch 8] [--out DIR]

Takes the last `--images` raccoon pictures (by file name) of /work/shared/datasets/raccoon (or
--dataset), trains with the built-in scratch recipe on the CPU, then scores best.pt on the same
images with `scaledyolo val --json` and prints mAP50, mAP50-95 and the wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATASET = Path("/work/shared/datasets/raccoon")


def make_subset(src: Path, out: Path, n: int) -> Path:
    """Copy the last `n` images (and their VOC XML) into `out`; return its data YAML."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for img in sorted((src / "images").glob("*.jpg"))[-n:]:
        shutil.copy2(img, out / "images" / img.name)
        shutil.copy2(src / "annotations" / f"{img.stem}.xml", out / "annotations" / f"{img.stem}.xml")
    yaml_path = out / "data.yaml"
    split = "{images: images, annotations: annotations}"
    yaml_path.write_text(f"path: {out.resolve()}\ntrain: {split}\nval: {split}\nnames: [raccoon]\n")
    return yaml_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--img", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("runs/memorise"))
    args = ap.parse_args()

    data = make_subset(args.dataset, args.out / "data", args.images)
    t0 = time.time()
    cli = [sys.executable, "-m", "scaledyolo"]
    subprocess.run(cli + ["train", "--model", "yolov4-tiny", "--data", str(data), "--img", str(args.img),
                          "--epochs", str(args.epochs), "--batch", str(args.batch), "--device", "cpu",
                          "--workers", "0", "--project", str(args.out), "--name", "train"], check=True)
    minutes = (time.time() - t0) / 60
    runs = sorted(args.out.glob("train*"), key=lambda p: p.stat().st_mtime)
    best = runs[-1] / "weights" / "best.pt"
    out = subprocess.run(cli + ["val", "--weights", str(best), "--data", str(data), "--img", str(args.img),
                                "--device", "cpu", "--json"], check=True, capture_output=True, text=True).stdout
    metrics = json.loads(out)
    print(f"yolov4-tiny, {args.images} images at {args.img} px, {args.epochs} epochs, batch {args.batch}: "
          f"mAP50 {metrics['map50']:.3f}, mAP50-95 {metrics['map']:.3f} on the training images; "
          f"training took {minutes:.1f} min ({'PASS' if metrics['map50'] >= 0.6 else 'FAIL'}: needs mAP50 >= 0.6)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
