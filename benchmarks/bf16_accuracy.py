"""Is bf16 inference accurate enough to be on by default? mAP of the fast path in fp32 vs bf16.

    python benchmarks/bf16_accuracy.py --weights W --data DATA.yaml [--split val] [--img 416] [--batch 8]

DESIGN.md: a reduced-precision path may be the default only if its mAP on a real validation set is
within 0.3 points of fp32. This runs `scaledyolo.eval.validate.validate` on the same loader with
`prepare_for_inference(model, precision="fp32")` and `precision="bf16"` and prints both mAPs, the
difference in points, the per-image inference time of each, and whether the 0.3-point rule holds.
"""

from __future__ import annotations

import argparse
import sys

import scaledyolo  # first: sets the OpenMP wait policy before torch loads
from scaledyolo.data.dataset import load_data_config
from scaledyolo.data.loader import create_dataloader
from scaledyolo.eval.validate import validate
from scaledyolo.models.inference import prepare_for_inference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="trained weights (any format scaledyolo.load reads)")
    parser.add_argument("--data", required=True, help="data YAML with a real validation split")
    parser.add_argument("--split", default="val")
    parser.add_argument("--img", type=int, default=None, help="input size (default: the model's)")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    model = scaledyolo.load(args.weights)
    img = args.img or model.spec.img_size
    cfg = load_data_config(args.data)
    loader, dataset = create_dataloader(cfg, args.split, img, args.batch, rect=True, stride=model.spec.max_stride)
    results = {}
    for precision in ("fp32", "bf16"):
        fast = prepare_for_inference(model, "cpu", precision=precision, img_size=img)
        r = validate(fast, loader, dataset, names=model.names, progress=False)
        results[precision] = r
        print(f"{precision}: mAP@.5:.95 {100 * r['map']:.2f}, mAP@.5 {100 * r['map50']:.2f}, "
              f"inference {r['speed']['inference_ms']:.1f} ms/image")
    diff = 100 * (results["bf16"]["map"] - results["fp32"]["map"])
    diff50 = 100 * (results["bf16"]["map50"] - results["fp32"]["map50"])
    print(f"bf16 - fp32: {diff:+.2f} points mAP@.5:.95, {diff50:+.2f} points mAP@.5 -> "
          f"{'within' if max(abs(diff), abs(diff50)) <= 0.3 else 'NOT within'} the 0.3-point rule (both)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
