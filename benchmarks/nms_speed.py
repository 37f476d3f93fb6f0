"""Time of `non_max_suppression` on random predictions (the worst case for NMS: little suppression).

    python benchmarks/nms_speed.py [--boxes 10000] [--classes 80] [--device cpu] [--threads 1] [--repeat 5]

Four settings per run: best class vs multi-label, conf 0.25 (predict) vs 0.001 (val). Prints the
candidate count entering NMS and the best of `--repeat` times in milliseconds. On a shared machine
the times are noisy: use the minimum and a fixed thread count.
"""

from __future__ import annotations

import argparse
import time

import torch

from scaledyolo.ops.nms import non_max_suppression


def random_predictions(boxes: int, classes: int, size: int = 640, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(1, boxes, 5 + classes, generator=g)
    pred[..., :2] *= size
    pred[..., 2:4] *= size / 6
    return pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", type=int, default=10000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pred = random_predictions(args.boxes, args.classes).to(device)
    print(f"{args.boxes} boxes x {args.classes} classes on {device} ({torch.get_num_threads()} threads)")
    print(f"{'setting':<28}{'candidates':>12}{'kept':>8}{'best ms':>10}")
    for multi_label in (False, True):
        for conf in (0.25, 0.001):
            scores = pred[0, :, 5:] * pred[0, :, 4:5]
            cand = int((scores > conf).sum()) if multi_label else int((scores.max(1).values > conf).sum())
            times = []
            for _ in range(args.repeat + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                out = non_max_suppression(pred, conf_thres=conf, iou_thres=0.45, multi_label=multi_label)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            name = f"{'multi-label' if multi_label else 'best class'} conf {conf}"
            print(f"{name:<28}{min(cand, 30000):>12}{len(out[0]):>8}{min(times[1:]) * 1e3:>10.1f}")


if __name__ == "__main__":
    main()
