"""Batch-1 CPU latency of every engine a user could pick, each in its own process, interleaved.

    python benchmarks/compare_cpu.py [--models tiny csp p5] [--rounds 6] [--reps 3] [--threads 2]
                                     [--engines ...] [--json]

Cases: the official darknet `yolov4-tiny.cfg` at 416 and `yolov4-csp.cfg` at 512 with random darknet
weights (random BN statistics too, so nothing folds away trivially), and yolov4-p5 at 640 with
random weights (no darknet cfg exists for it; OpenCV reads our ONNX export instead). Engines, all
on the same weights and the same input:

- `ours`: `scaledyolo.load(...)` + the default fast path (`prepare_for_inference`), what `scaledyolo
  bench` and `predict` run; `ours-bf16`: the same in bfloat16 (only where the CPU has AVX512-BF16/AMX);
- `opencv`: `cv2.dnn.readNetFromDarknet` on the cfg + weights (P5: `readNetFromONNX`);
- `onnxruntime`: our ONNX export, CPU provider, all graph optimisations, its defaults otherwise;
- `openvino`: our ONNX export on OpenVINO's CPU plugin with `INFERENCE_PRECISION_HINT=f32` (its
  default on a bf16-capable CPU is bf16, a different computation);
- `ours-int8` (with `--int8`): what `--precision int8` runs (`precision.int8_network`: our graph
  quantised by NNCF, run by OpenVINO with the f32 hint for what stays float), calibrated on random
  pictures: a speed figure only; its accuracy lives in precision_accuracy.py.

Why separate processes: engines in one process share the OpenMP/TBB pools and allocator state, and
one engine's spinning threads slow the next; a user runs one engine per process. Each worker loads
its engine once, warms it up, then the parent asks the workers in turn for `reps` timed calls per
round, starting with a different engine each round, so a burst of outside load hits all alike.
A short idle pause between turns lets the previous engine's threads go to sleep. The table gives
each engine's median and minimum over all calls and the ratio of ours to the best peer (the fastest
of OpenCV, ONNX Runtime and OpenVINO f32). Before timing, every engine's output is compared with ours.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import scaledyolo  # first: it sets the OpenMP wait policy before torch loads the OpenMP runtime

import cv2
import numpy as np
import torch
from scaledyolo.calibration import random_calibration
from scaledyolo.interop.darknet import model_from_cfg, save_weights
from scaledyolo.interop.onnx import export_onnx
from scaledyolo.models.inference import prepare_for_inference
from scaledyolo.precision import int8_network

CFG_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "darknet"
CASES = {"tiny": ("yolov4-tiny", 416), "csp": ("yolov4-csp", 512), "p5": ("yolov4-p5", 640)}
PEERS = ("opencv", "onnxruntime", "openvino")
ENGINES = ("ours", "ours-bf16", "ours-int8", "opencv", "onnxruntime", "openvino")


def cpuinfo(key: str) -> str:
    """The first CPU's `key` line of /proc/cpuinfo ("model name", "model", "flags"), or ""."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def cpu_flags() -> set[str]:
    return set(cpuinfo("flags").split())


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Random but valid BN statistics and affine terms, so folding them is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def prepare_files(key: str, workdir: Path) -> dict[str, Path]:
    """The case's model files, written once by the parent: darknet cfg/weights or a checkpoint, and ONNX."""
    name, size = CASES[key]
    files: dict[str, Path] = {}
    if key == "p5":
        torch.manual_seed(0)
        model = scaledyolo.build_model(name)
        randomize_batchnorm(model)
        files["state"] = workdir / f"{name}.state.pt"
        torch.save(model.state_dict(), files["state"])
    else:
        files["cfg"] = CFG_DIR / f"{name}.cfg"
        model = model_from_cfg(files["cfg"])
        randomize_batchnorm(model)
        files["weights"] = workdir / f"{name}.weights"
        save_weights(model, files["weights"])
        model = scaledyolo.load(files["cfg"], weights=files["weights"])
    files["onnx"] = export_onnx(model.eval(), workdir / f"{name}.onnx", img=size)
    return files


def load_ours(key: str, files: dict[str, str]) -> torch.nn.Module:
    name, _ = CASES[key]
    if key == "p5":
        model = scaledyolo.build_model(name)
        model.load_state_dict(torch.load(files["state"], weights_only=True))
        return model.eval()
    return scaledyolo.load(files["cfg"], weights=files["weights"])


def make_engine(engine: str, key: str, files: dict[str, str],
                threads: int) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A callable running one batch on `engine`, returning our output layout `(1, N, 5 + nc)`, and a description.

    Each runtime is imported only in the worker that runs it, so no process holds another engine's
    thread pools."""
    _, size = CASES[key]
    if engine in ("ours", "ours-bf16"):
        torch.set_num_threads(threads)
        precision = "bf16" if engine == "ours-bf16" else "fp32"
        fast = prepare_for_inference(load_ours(key, files), "cpu", precision=precision, img_size=size)
        return (lambda blob: fast(torch.from_numpy(blob)).float().numpy()), f"scaledyolo {precision} fast path"
    if engine == "ours-int8":
        torch.set_num_threads(threads)
        network = int8_network(load_ours(key, files), size, random_calibration(8))
        return (lambda blob: network(torch.from_numpy(blob)).numpy()), "scaledyolo int8 (NNCF, OpenVINO runs it)"
    if engine == "opencv":
        cv2.setNumThreads(threads)
        if key == "p5":
            net = cv2.dnn.readNetFromONNX(files["onnx"])
        else:
            net = cv2.dnn.readNetFromDarknet(files["cfg"], files["weights"])
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        out_names = list(net.getUnconnectedOutLayersNames())
        model = load_ours(key, files) if key != "p5" else None

        def run_opencv(blob: np.ndarray) -> np.ndarray:
            net.setInput(blob)
            outs = net.forward(out_names)
            return outs[0] if model is None else opencv_to_ours(model, outs, size)
        return run_opencv, f"OpenCV DNN {cv2.__version__}"
    if engine == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(files["onnx"], options, providers=["CPUExecutionProvider"])
        return (lambda blob: session.run(None, {"images": blob})[0]), f"ONNX Runtime {ort.__version__}"
    import openvino as ov

    core = ov.Core()
    request = core.compile_model(core.read_model(files["onnx"]), "CPU",
                                 {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
                                 ).create_infer_request()

    def run_openvino(blob: np.ndarray) -> np.ndarray:
        return next(iter(request.infer({0: blob}).values()))
    return run_openvino, f"OpenVINO {ov.__version__.split('-')[0]} f32 hint"


def opencv_to_ours(model: torch.nn.Module, cv_outs: list[np.ndarray], size: int) -> np.ndarray:
    """OpenCV's YOLO rows (cell-major: y, x, then anchor; boxes 0-1) in our order (anchor, y, x; pixels)."""
    na = model.detect.na
    by_rows = {len(out): out for out in cv_outs}
    parts = []
    for level in model.levels:
        h = w = size // model.spec.strides[level]
        rows = by_rows[h * w * na]
        part = rows.reshape(h, w, na, -1).transpose(2, 0, 1, 3).reshape(h * w * na, -1).copy()
        part[:, :4] *= size
        parts.append(part)
    return np.concatenate(parts)[None]


def worker(engine: str, key: str, files: dict[str, str], threads: int) -> None:
    """Serve one engine over stdin/stdout: `time N` answers N call times in ms, `dump PATH` saves an output."""
    _, size = CASES[key]
    run, description = make_engine(engine, key, files, threads)
    blob = np.random.default_rng(1).random((1, 3, size, size), dtype=np.float32)
    for _ in range(3):
        run(blob)
    print(json.dumps({"ready": description}), flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "time":
            times = []
            for _ in range(int(arg)):
                t0 = time.perf_counter()
                run(blob)
                times.append((time.perf_counter() - t0) * 1e3)
            print(json.dumps({"ms": times}), flush=True)
        elif command == "dump":
            np.save(arg, run(blob))
            print(json.dumps({"saved": arg}), flush=True)
        else:
            return


class Worker:
    """The parent's handle on one engine's process."""

    def __init__(self, engine: str, key: str, files: dict[str, Path], threads: int):
        spec = json.dumps({k: str(v) for k, v in files.items()})
        self.engine = engine
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", engine, "--models", key, "--threads", str(threads),
             "--files", spec],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.description = self.ask(None)["ready"]

    def ask(self, command: str | None) -> dict[str, Any]:
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.engine} worker exited (code {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def agreement(ours: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Largest |difference| against ours: boxes in pixels, objectness x class scores."""
    box = float(np.abs(ours[..., :4] - other[..., :4]).max())
    score = float(np.abs(ours[..., 4:5] * ours[..., 5:] - other[..., 4:5] * other[..., 5:]).max())
    return {"box_px": box, "score": score}


def run_case(key: str, engines: list[str], rounds: int, reps: int, threads: int, pause: float,
             workdir: Path) -> dict[str, Any]:
    name, size = CASES[key]
    files = prepare_files(key, workdir)
    workers = [Worker(engine, key, files, threads) for engine in engines]
    try:
        outputs = {}
        for w in workers:
            path = workdir / f"{key}-{w.engine}.npy"
            w.ask(f"dump {path}")
            outputs[w.engine] = np.load(path)
        agree = {e: agreement(outputs["ours"], out) for e, out in outputs.items() if e != "ours"}
        times: dict[str, list[float]] = {w.engine: [] for w in workers}
        for r in range(rounds):
            for w in workers[r % len(workers):] + workers[:r % len(workers)]:
                time.sleep(pause)
                times[w.engine] += w.ask(f"time {reps}")["ms"]
        described = {w.engine: w.description for w in workers}
    finally:
        for w in workers:
            w.close()
    rows = {e: {"median_ms": statistics.median(t), "min_ms": min(t), "calls": len(t), "engine": described[e]}
            for e, t in times.items()}
    peers = [e for e in PEERS if e in rows]
    best = min(peers, key=lambda e: rows[e]["median_ms"]) if peers else None
    for row in rows.values():
        row["vs_best_peer"] = row["median_ms"] / rows[best]["median_ms"] if best else None
    return {"model": name, "img": size, "best_peer": best, "agreement_vs_ours": agree, "engines": rows}


def conditions(threads: int) -> dict[str, Any]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
    return {"cpu": cpuinfo("model name") or platform.processor(), "cpu_model_number": cpuinfo("model") or "?",
            "logical_cpus": os.cpu_count(), "threads": threads, "flags": [f for f in wanted if f in cpu_flags()],
            "torch": torch.__version__, "opencv": cv2.__version__, "python": platform.python_version(),
            "loadavg_before": os.getloadavg()}


def format_table(results: list[dict[str, Any]], cond: dict[str, Any]) -> str:
    lines = [f"CPU: {cond['cpu']} (model {cond['cpu_model_number']}, {cond['logical_cpus']} logical CPUs; "
             f"{' '.join(cond['flags'])}), {cond['threads']} threads per engine, one process per engine; "
             f"load average before {cond['loadavg_before'][0]:.1f}, after {cond['loadavg_after'][0]:.1f}",
             "",
             "| model | img | engine | median ms | min ms | / best peer | box px vs ours | score vs ours |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for engine, row in r["engines"].items():
            agree = r["agreement_vs_ours"].get(engine)
            box = f"{agree['box_px']:.2g}" if agree else "-"
            score = f"{agree['score']:.2g}" if agree else "-"
            ratio = f"{row['vs_best_peer']:.2f}" if row["vs_best_peer"] is not None else "-"
            lines.append(f"| {r['model']} | {r['img']} | {engine} | {row['median_ms']:.1f} | "
                         f"{row['min_ms']:.1f} | {ratio} | {box} | {score} |")
    lines.append("")
    lines += [f"- {engine}: {row['engine']}" for engine, row in results[0]["engines"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "csp"], choices=list(CASES))
    parser.add_argument("--engines", nargs="+", default=None, choices=ENGINES,
                        help="default: all, ours-bf16 only on a bf16-capable CPU, ours-int8 only with --int8")
    parser.add_argument("--int8", action="store_true", help="also time our --precision int8 path (quantising takes minutes)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per engine per round")
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine")
    parser.add_argument("--pause", type=float, default=0.2, help="idle seconds before each engine's turn")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.models[0], json.loads(args.files), args.threads)
        return 0
    engines = args.engines or [e for e in ENGINES if (e != "ours-bf16" or {"avx512_bf16", "amx_bf16"} & cpu_flags())
                               and (e != "ours-int8" or args.int8)]
    if "ours" not in engines:
        engines.insert(0, "ours")
    torch.set_num_threads(args.threads)
    cond = conditions(args.threads)
    with tempfile.TemporaryDirectory(prefix="compare-cpu-") as tmp:
        results = [run_case(k, engines, args.rounds, args.reps, args.threads, args.pause, Path(tmp))
                   for k in args.models]
    cond["loadavg_after"] = os.getloadavg()
    print(json.dumps({"conditions": cond, "results": results}, indent=2) if args.json else format_table(results, cond))
    return 0


if __name__ == "__main__":
    sys.exit(main())
