"""Issue 8's check as stated: `scaledyolo bench --json` vs OpenCV DNN, each in its own process, interleaved.

    python benchmarks/check_cli_vs_opencv.py [--rounds 3] [--runs 20] [--warmup 3] [--threads 2]

For the official yolov4-tiny (416) and yolov4-csp (512) cfgs with random darknet weights (written
beside a copy of each cfg, so `--weights NAME.cfg` finds them), every round runs, one after the
other, `scaledyolo bench --weights NAME.cfg --img N --json` (the default path, as a user runs it) and
an OpenCV DNN process timing `readNetFromDarknet` the same way (warm-up calls, then the median of
`--runs` calls, `cv2.setNumThreads(--threads)`). It prints each round's two medians and their ratio,
and the ratio of the medians over rounds; the target is <= 0.85 for both models.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CFG_DIR = Path("/work/shared/reference/darknet")
CASES = (("yolov4-tiny", 416), ("yolov4-csp", 512))
TARGET = 0.85


def opencv_latency(cfg: str, weights: str, size: int, runs: int, warmup: int, threads: int) -> float:
    """Median milliseconds of OpenCV DNN's forward on a random (1, 3, size, size) blob."""
    import cv2
    import numpy as np

    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    names = net.getUnconnectedOutLayersNames()
    blob = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        net.setInput(blob)
        net.forward(names)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def ours_latency(cfg: Path, size: int, runs: int, warmup: int, threads: int) -> float:
    out = subprocess.run([sys.executable, "-m", "scaledyolo", "bench", "--weights", str(cfg), "--img", str(size),
                          "--runs", str(runs), "--warmup", str(warmup), "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True)
    return float(json.loads(out.stdout)["latency_ms"])


def theirs_latency(cfg: Path, size: int, runs: int, warmup: int, threads: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--opencv", str(cfg), str(cfg.with_suffix(".weights")), str(size),
                          str(runs), str(warmup), str(threads)], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--opencv":
        cfg, weights, size, runs, warmup, threads = argv[1:7]
        print(opencv_latency(cfg, weights, int(size), int(runs), int(warmup), int(threads)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from compare_cpu import random_darknet_weights

    load_before = os.getloadavg()[0]
    rows = {name: {"ours": [], "opencv": []} for name, _ in CASES}
    with tempfile.TemporaryDirectory(prefix="check-cli-") as tmp:
        cfgs = {}
        for name, _ in CASES:
            cfg = Path(tmp) / f"{name}.cfg"
            shutil.copy(CFG_DIR / f"{name}.cfg", cfg)
            random_darknet_weights(cfg, cfg.with_suffix(".weights"))
            cfgs[name] = cfg
        for r in range(args.rounds):
            for name, size in CASES:
                first, second = (ours_latency, theirs_latency) if r % 2 == 0 else (theirs_latency, ours_latency)
                a = first(cfgs[name], size, args.runs, args.warmup, args.threads)
                b = second(cfgs[name], size, args.runs, args.warmup, args.threads)
                ours, theirs = (a, b) if first is ours_latency else (b, a)
                rows[name]["ours"].append(ours)
                rows[name]["opencv"].append(theirs)
                print(f"round {r + 1} {name}: ours {ours:.1f} ms, OpenCV {theirs:.1f} ms, ratio {ours / theirs:.2f}",
                      flush=True)
    print(f"\nload average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; {args.threads} threads, "
          f"median of {args.runs} calls per process")
    print("| model | img | ours ms (per round) | OpenCV ms (per round) | ratio of medians | <= 0.85 |")
    print("|---|---|---|---|---|---|")
    ok = True
    for name, size in CASES:
        ours, theirs = rows[name]["ours"], rows[name]["opencv"]
        ratio = statistics.median(ours) / statistics.median(theirs)
        ok &= ratio <= TARGET
        print(f"| {name} | {size} | {', '.join(f'{t:.1f}' for t in ours)} | {', '.join(f'{t:.1f}' for t in theirs)} "
              f"| {ratio:.2f} | {'yes' if ratio <= TARGET else 'no'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
