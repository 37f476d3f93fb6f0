"""Where `scaledyolo predict` spends its time per picture: decode / preprocess / model / NMS / drawing.

    python benchmarks/predict_split.py [--images 30] [--models yolov4-tiny:416 yolov4-csp:512] [--conf 0.25 0.01]

Runs the `predict` command's own code (`run_predict`, the default fast path) on real pictures (the
raccoon images, /work/shared/datasets/raccoon, 500-ish px JPEGs) with random weights, writing
annotated pictures to a temporary folder. `decode` is the time outside the four measured stages:
reading and decoding the JPEGs. A low `--conf` gives NMS many more candidate boxes (random weights
give few confident ones), to show its worst case.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import scaledyolo  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
from scaledyolo.predict import STAGES, run_predict

RACCOON = Path("/work/shared/datasets/raccoon/images")


def split(weights: str, img: int, images: Path, conf: float, out: Path) -> dict[str, float]:
    summary = run_predict(weights, str(images), img=img, conf=conf, save_dir=str(out), progress=False)
    ms = dict(summary["ms_per_image"])
    ms["decode"] = max(0.0, summary["seconds"] * 1e3 / summary["images"] - sum(ms[k] for k in STAGES))
    ms["total"] = summary["seconds"] * 1e3 / summary["images"]
    ms["objects_per_image"] = summary["objects"] / summary["images"]
    return ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30, help="how many raccoon pictures")
    parser.add_argument("--models", nargs="+", default=["yolov4-tiny:416", "yolov4-csp:512"], help="NAME:IMG")
    parser.add_argument("--conf", nargs="+", type=float, default=[0.25, 0.0001], help="score thresholds to try")
    args = parser.parse_args(argv)
    files = sorted(RACCOON.glob("*.jpg"))[: args.images]
    if not files:
        print(f"no pictures in {RACCOON}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="predict-split-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for f in files:
            (folder / f.name).symlink_to(f)
        print("| model | img | conf | objects/img | decode | preprocess | model | nms | drawing | total ms/img |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for spec in args.models:
            name, img = spec.split(":")
            for conf in args.conf:
                ms = split(name, int(img), folder, conf, Path(tmp) / f"out-{name}-{conf}")
                print(f"| {name} | {img} | {conf} | {ms['objects_per_image']:.1f} | {ms['decode']:.1f} | "
                      f"{ms['preprocess']:.1f} | {ms['model']:.1f} | {ms['nms']:.1f} | {ms['drawing']:.1f} | "
                      f"{ms['total']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
