"""Square or rectangle input for models trained here: mAP of both on a real validation split.

    python benchmarks/geometry.py --weights best.pt --data raccoon.yaml [--img 320 416] [--split val]

For each size, the same weights are scored four ways: `scaledyolo val` with its rectangular
batches (`--rect`, the official test script's) and with every image letterboxed to the square
(`--square`), both by pycocotools; and `scaledyolo predict` (one picture at a time: the smallest
stride-multiple rectangle, or the square) scored by our matcher at conf 0.001, IoU 0.65. The
default geometry of models trained here (`scaledyolo.geometry.TRAINED_GEOMETRY`) stays `rect` only
while rect is as good as square here; benchmarks/README.md has the table.
"""

from __future__ import annotations

import argparse

import numpy as np

import scaledyolo  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
from scaledyolo.data.dataset import load_data_config
from scaledyolo.data.loader import create_dataloader
from scaledyolo.eval.validate import run_val, score_predictions
from scaledyolo.interop.loading import load_model
from scaledyolo.predict import predict


def predict_map(weights: str, data: str, split: str, img: int, geometry: str) -> tuple[float, float]:
    """(mAP50-95, mAP50) of `predict` one picture at a time, by our matcher."""
    model = load_model(weights)
    _, dataset = create_dataloader(load_data_config(data), split, img, 1, stride=model.spec.max_stride)
    results = predict(model, [str(f) for f in dataset.image_files], conf=0.001, iou=0.65, img=img,
                      geometry=geometry, batch=1)
    preds = [r.boxes.data for r in results]
    ap = score_predictions(preds, dataset.labels, [r.orig_shape for r in results], model.num_classes)
    return ap.map, ap.map50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a checkpoint trained on --data's train split")
    parser.add_argument("--data", required=True, help="data YAML with a real, held-out validation split")
    parser.add_argument("--split", default="val")
    parser.add_argument("--img", type=int, nargs="+", default=[None], help="sizes (default: the training size)")
    args = parser.parse_args()
    print("| img | val rect mAP / mAP50 | val square mAP / mAP50 | predict rect mAP / mAP50 | "
          "predict square mAP / mAP50 |")
    print("|---|---|---|---|---|")
    for img in args.img:
        cells, size = [], img
        for geometry in ("rect", "square"):
            r = run_val(args.weights, args.data, img=img, split=args.split, geometry=geometry, progress=False)
            cells.append(f"{100 * r['map']:.2f} / {100 * r['map50']:.2f}")
            size = r["img"]
        for geometry in ("rect", "square"):
            m, m50 = predict_map(args.weights, args.data, args.split, size, geometry)
            cells.append(f"{100 * m:.2f} / {100 * m50:.2f}")
        print(f"| {size} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
