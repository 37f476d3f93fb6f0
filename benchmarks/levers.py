"""What each CPU inference lever buys: CPU time per batch-1 forward, one thread, lever by lever.

    python benchmarks/levers.py [--models yolov4-tiny:416 yolov4-csp:512] [--runs 5] [--compile]

CPU time of the process (`time.process_time`) on one thread measures the work a forward costs,
and is much less disturbed than wall time when other programs share the cores. Minor page faults
per forward are shown too (the cost `keep_freed_memory` removes). Levers, cumulative:

1. the eval model as built (BN separate, NCHW);
2. `model.fuse()` (BN folded into the convolutions);
3. + channels_last;
4. the fast path without memory reuse: pre-packed oneDNN weights, post-ops fused, fast Mish;
5. the fast path (the default: + freed memory kept for reuse, glibc mallopt; process-wide from
   here on, so it runs after the variants without it);
6. the fast path in bf16 (opt-in);
7. with `--compile`: the fast path through torch.compile (compile time printed; not the default).
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import time
from typing import Any, Callable

import scaledyolo  # first: sets the OpenMP wait policy before torch loads
import torch

from scaledyolo.models.inference import prepare_for_inference


def cost(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Median CPU milliseconds per call and minor page faults per call, after two warm-up calls."""
    fn()
    fn()
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / runs
    return statistics.median(times) * 1e3, faults


def without_reuse(name: str, size: int, runs: int) -> list[tuple[str, float, float]]:
    """Levers 1-4 (run for every model before anything turns memory reuse on)."""
    model = scaledyolo.build_model(name).eval()
    x = torch.rand(1, 3, size, size)
    xc = x.contiguous(memory_format=torch.channels_last)
    fused = copy.deepcopy(model).fuse()
    fused_cl = copy.deepcopy(fused).to(memory_format=torch.channels_last)
    no_reuse = prepare_for_inference(model, img_size=size, reuse_memory=False)
    with torch.inference_mode():
        return [("eval model (NCHW, BN separate)", *cost(lambda: model(x), runs)),
                ("+ fuse()", *cost(lambda: fused(x), runs)),
                ("+ channels_last", *cost(lambda: fused_cl(xc), runs)),
                ("fast path without memory reuse", *cost(lambda: no_reuse(x), runs))]


def with_reuse(name: str, size: int, runs: int, compile: bool) -> list[tuple[str, float, float]]:
    """Levers 5-7."""
    model = scaledyolo.build_model(name).eval()
    x = torch.rand(1, 3, size, size)
    fast = prepare_for_inference(model, img_size=size)
    bf16 = prepare_for_inference(model, img_size=size, precision="bf16")
    rows = [("fast path (default)", *cost(lambda: fast(x), runs)),
            ("fast path, bf16 (opt-in)", *cost(lambda: bf16(x), runs))]
    if compile:
        t0 = time.perf_counter()
        compiled = prepare_for_inference(model, img_size=size, compile=True)
        label = f"fast path, torch.compile (compile {time.perf_counter() - t0:.0f} s)"
        rows.append((label, *cost(lambda: compiled(x), runs)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov4-tiny:416", "yolov4-csp:512"], help="NAME:IMG")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile variant")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| model | img | variant | CPU ms / forward | vs eval model | minor page faults / forward |")
    print("|---|---|---|---|---|---|")
    cases = [(spec.split(":")[0], int(spec.split(":")[1])) for spec in args.models]
    first = {case: without_reuse(*case, args.runs) for case in cases}
    for case in cases:
        rows = first[case] + with_reuse(*case, args.runs, args.compile)
        base = rows[0][1]
        for label, ms, faults in rows:
            print(f"| {case[0]} | {case[1]} | {label} | {ms:.1f} | {base / ms:.2f}x | {faults:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
