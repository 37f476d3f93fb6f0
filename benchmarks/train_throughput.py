"""Training throughput (images/s) of a member on the CPU, next to what the data loader can deliver.

    python benchmarks/train_throughput.py [--model yolov4-tiny] [--img 416] [--batch 16] [--iters 4]

A training step is what the trainer does per batch: train-mode forward, `ComputeLoss`, backward,
an SGD step (momentum 0.937, Nesterov). It runs on in-memory batches (random pictures, a few real-
looking boxes each), so the figure is the model's, not the loader's; then the augmenting loader
(mosaic, affine, HSV, flips; `benchmarks/data_throughput.py`) is timed on the raccoon images at the
same size, to show whether data loading would be the bottleneck. Steps are tried in the default
layout and in channels_last, and with bf16 autocast (a speed lever for training only when the
accuracy holds; reported, not used by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import scaledyolo  # first: sets the OpenMP wait policy before torch loads
import torch

from scaledyolo.train.loss import ComputeLoss

sys.path.insert(0, str(Path(__file__).parent))
from data_throughput import default_data, measure  # noqa: E402


def random_batch(batch: int, img: int, boxes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, img, img, generator=g)
    rows = []
    for i in range(batch):
        wh = torch.rand(boxes, 2, generator=g) * 0.4 + 0.05
        xy = torch.rand(boxes, 2, generator=g) * (1 - wh) + wh / 2
        cls = torch.randint(0, 80, (boxes, 1), generator=g).float()
        rows.append(torch.cat([torch.full((boxes, 1), float(i)), cls, xy, wh], 1))
    return x, torch.cat(rows)


def step_rate(name: str, img: int, batch: int, iters: int, channels_last: bool, bf16: bool) -> float:
    """Images per second of full training steps (median step time over `iters`, after one warm-up)."""
    model = scaledyolo.build_model(name).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = ComputeLoss(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    x, targets = random_batch(batch, img)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(iters + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            preds = model(x)
        loss, _ = loss_fn([p.float() for p in preds], targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov4-tiny")
    parser.add_argument("--img", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=4, help="timed steps per variant")
    parser.add_argument("--loader-batches", type=int, default=6, help="batches to time the loader on")
    args = parser.parse_args(argv)
    print(f"{args.model} @ {args.img}, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    for channels_last, bf16 in ((False, False), (True, False), (True, True)):
        rate = step_rate(args.model, args.img, args.batch, args.iters, channels_last, bf16)
        print(f"train step ({'channels_last' if channels_last else 'NCHW'}, {'bf16 autocast' if bf16 else 'fp32'}): "
              f"{rate:.2f} images/s")
    with tempfile.TemporaryDirectory() as tmp:
        data = default_data(Path(tmp))
        for workers in (0, 2):
            rate = measure(data, args.img, args.batch, workers, args.loader_batches, cache=False)
            print(f"augmenting loader, {workers} workers: {rate:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
