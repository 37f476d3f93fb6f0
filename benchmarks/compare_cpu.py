"""Batch-1 CPU latency, side by side: our default path vs OpenCV DNN vs ONNX Runtime.

    python benchmarks/compare_cpu.py [--rounds 5] [--reps 3] [--threads 2] [--models tiny csp] [--json]

For each official darknet cfg (yolov4-tiny at 416, yolov4-csp at 512; /work/shared/reference/darknet)
it writes a random-weight darknet `.weights` file (random BN statistics too, so nothing folds away
trivially), then loads the same cfg + weights three ways:

- ours: `scaledyolo.load(cfg, weights=...)` then the default fast path (`prepare_for_inference`),
  exactly what `scaledyolo bench` and `predict` run;
- OpenCV DNN: `cv2.dnn.readNetFromDarknet` (its own AVX-512 kernels, BN and activation fused);
- ONNX Runtime: our ONNX export of the same model, CPU provider, all graph optimisations, its
  threads not spinning between runs (they would slow the next engine; costs ORT about 4%).

The engines run interleaved: each round runs every engine `reps` times, starting with a different
engine each round, so a burst of load from other processes hits all of them alike (`--pause`
adds idle time before each engine's turn, to see the cost of a cold start). The table gives
the median over all timed calls and the ratio to OpenCV's median (and the minimum, the least
disturbed call). Before timing, it checks that OpenCV and we compute the same boxes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import scaledyolo  # first: it sets the OpenMP wait policy before torch loads the OpenMP runtime

import cv2
import numpy as np
import torch
from scaledyolo.interop.darknet import model_from_cfg, save_weights
from scaledyolo.models.inference import prepare_for_inference

CFG_DIR = Path("/work/shared/reference/darknet")
CASES = {"tiny": ("yolov4-tiny", 416), "csp": ("yolov4-csp", 512)}


def random_darknet_weights(cfg: Path, out: Path, seed: int = 0) -> Path:
    """A darknet .weights file for `cfg` with random weights and random (valid) BN statistics."""
    model = model_from_cfg(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    save_weights(model, out)
    return out


def opencv_net(cfg: Path, weights: Path) -> tuple[Any, list[str]]:
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net, list(net.getUnconnectedOutLayersNames())


def check_same_boxes(model: scaledyolo.models.YOLO, ours: torch.Tensor, cv_outs: list[np.ndarray], size: int) -> float:
    """Largest |difference| in pixels between OpenCV's and our box centres and sizes (same cells, anchors)."""
    na = model.detect.na
    by_rows = {len(out): out for out in cv_outs}
    worst = 0.0
    start = 0
    for level in model.levels:
        h = w = size // model.spec.strides[level]
        n = h * w * na
        # OpenCV rows: cell-major (y, x), then anchor; ours: anchor-major (a, y, x)
        cv = torch.from_numpy(np.ascontiguousarray(by_rows[n][:, :4])).reshape(h, w, na, 4)
        cv = cv.permute(2, 0, 1, 3).reshape(n, 4) * size
        worst = max(worst, (cv - ours[0, start:start + n, :4]).abs().max().item())
        start += n
    return worst


def onnx_session(model: scaledyolo.models.YOLO, size: int, threads: int, workdir: Path) -> Callable[[np.ndarray], Any]:
    import onnxruntime as ort

    from scaledyolo.interop.onnx import export_onnx

    path = export_onnx(model, workdir / f"{model.spec.name}.onnx", img=size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's pool threads otherwise keep spinning for tens of ms after each run, slowing whichever
    # engine runs next in this process (measured: our next two calls 30-40 ms instead of 18 on tiny)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda blob: session.run(None, {"images": blob})


def interleaved(engines: dict[str, Callable[[], Any]], rounds: int, reps: int,
                pause: float = 0.0) -> dict[str, list[float]]:
    """Milliseconds per call of each engine, rounds x reps calls each, engines interleaved."""
    names = list(engines)
    for fn in engines.values():  # warm-up (oneDNN primitive creation, ORT arena, OpenCV allocations)
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            time.sleep(pause)  # let the previous engine's pool threads stop spinning
            for _ in range(reps):
                t0 = time.perf_counter()
                engines[name]()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def run_case(key: str, rounds: int, reps: int, threads: int, workdir: Path, pause: float = 0.0) -> dict[str, Any]:
    name, size = CASES[key]
    cfg = CFG_DIR / f"{name}.cfg"
    weights = random_darknet_weights(cfg, workdir / f"{name}.weights")
    model = scaledyolo.load(cfg, weights=weights)
    fast = prepare_for_inference(model, "cpu", img_size=size)
    net, out_names = opencv_net(cfg, weights)
    ort_run = onnx_session(model, size, threads, workdir)

    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    blob = x.numpy()

    def opencv() -> Any:
        net.setInput(blob)
        return net.forward(out_names)

    box_diff = check_same_boxes(model, fast(x), opencv(), size)
    times = interleaved({"ours": lambda: fast(x), "opencv": opencv, "onnxruntime": lambda: ort_run(blob)},
                        rounds, reps, pause)
    cv_med, cv_min = statistics.median(times["opencv"]), min(times["opencv"])
    rows = {k: {"median_ms": statistics.median(v), "min_ms": min(v),
                "ratio_median": statistics.median(v) / cv_med, "ratio_min": min(v) / cv_min, "calls": len(v)}
            for k, v in times.items()}
    return {"model": name, "img": size, "box_max_abs_diff_px_vs_opencv": box_diff, "engines": rows}


def conditions(threads: int) -> dict[str, Any]:
    import onnxruntime

    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "opencv": cv2.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "loadavg_before": os.getloadavg()}


def format_table(results: list[dict[str, Any]], cond: dict[str, Any]) -> str:
    lines = [f"CPU: {cond['cpu']} ({cond['logical_cpus']} logical CPUs), {cond['threads']} threads per engine; "
             f"torch {cond['torch']}, opencv {cond['opencv']}, onnxruntime {cond['onnxruntime']}; "
             f"load average before {cond['loadavg_before'][0]:.1f}, after {cond['loadavg_after'][0]:.1f}",
             "",
             "| model | img | engine | median ms | min ms | median / OpenCV | min / OpenCV |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for engine, row in r["engines"].items():
            lines.append(f"| {r['model']} | {r['img']} | {engine} | {row['median_ms']:.1f} | {row['min_ms']:.1f} | "
                         f"{row['ratio_median']:.2f} | {row['ratio_min']:.2f} |")
    lines.append("")
    lines += [f"{r['model']}: boxes agree with OpenCV to {r['box_max_abs_diff_px_vs_opencv']:.4f} px" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per engine per round")
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine")
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds of idle before each engine's calls (default none: after an idle pause every "
                             "engine's first calls are slower on this VM, ours most, as its threads sleep sooner)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    cond = conditions(args.threads)
    with tempfile.TemporaryDirectory(prefix="compare-cpu-") as tmp:
        results = [run_case(k, args.rounds, args.reps, args.threads, Path(tmp), args.pause) for k in args.models]
    cond["loadavg_after"] = os.getloadavg()
    if args.json:
        print(json.dumps({"conditions": cond, "results": results}, indent=2))
    else:
        print(format_table(results, cond))
    return 0


if __name__ == "__main__":
    sys.exit(main())
