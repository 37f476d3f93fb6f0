"""`scaledyolo bench`: latency, images/s and the fraction of the machine's peak (`scaledyolo.bench.benchmark`)."""

from __future__ import annotations

import argparse
from typing import Any

from scaledyolo.bench import benchmark
from scaledyolo.commands.common import show
from scaledyolo.errors import UserError


def run(args: argparse.Namespace) -> int:
    if not args.weights:
        raise UserError("bench needs --model (or --weights): a member name, spec YAML or weights file")
    result = benchmark(args.weights, img=args.img, batch=args.batch, device=args.device,
                       backend=args.backend, precision=args.precision, half=args.half, subnet=args.subnet,
                       runs=args.runs, warmup=args.warmup, compile=args.compile, threads=args.threads,
                       calib=args.calib, data=args.data, calib_images=args.calib_images)
    show(result, format_result(result), args.json)
    return 0


def format_result(r: dict[str, Any]) -> str:
    """The human-readable summary `scaledyolo bench` prints."""
    sub = f" subnet {r['subnet']}" if r["subnet"] else ""
    onednn = f", oneDNN {r['onednn_matmul_gflops_s']:.1f}" if r["onednn_matmul_gflops_s"] else ""
    peak = "peak        not measured for int8 (no same-dtype torch matmul)" if r["peak_gflops_s"] is None else (
        f"peak        {r['peak_gflops_s']:.1f} GFLOP/s ({r['precision']} matmul measured now: torch.mm "
        f"{r['mm_gflops_s']:.1f}{onednn}) -> {100 * r['peak_fraction']:.0f}% of peak"
        + (" (faster than the matmul: a Winograd/FFT convolution, or the matmul fell short)" if r["above_peak"]
           else ""))
    return "\n".join([
        f"{r['model']}{sub} @ {r['img']}x{r['img']}, batch {r['batch']}, {r['device']} ({r['device_name']}), "
        f"{r['threads']} threads, {r['path']}",
        f"latency     {r['latency_ms']:.2f} ms per batch (median of {r['runs']}; min {r['latency_min_ms']:.2f})",
        f"throughput  {r['fps']:.1f} images/s",
        f"compute     {r['gflops']:.2f} GFLOPs per image -> {r['achieved_gflops_s']:.1f} GFLOP/s achieved",
        peak,
    ])
