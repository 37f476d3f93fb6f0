"""Speed of a model on this machine, and how near it runs to the hardware's limit.

`benchmark(...)` (`scaledyolo bench`, `Detector.bench`) times the default (fast) inference path, or another backend, at one input size
and batch: a few warm-up calls, then the median of repeated calls. Next to latency and images/s it
reports the model's GFLOPs at that size, the GFLOP/s achieved, and that figure as a fraction of the
machine's peak, measured in the same run as the best of two matrix multiplications of the same dtype
(`torch.mm`, and oneDNN's matmul with pre-packed weights: MKL's GEMM is not the fastest path on
every CPU). On a GPU the matmul runs in the math mode the convolutions use (TF32 for fp32 on
Ampere and later, unless `torch.backends.cudnn.allow_tf32` is off) and is large enough to reach the
tensor cores' rate. The fraction is capped at 1: a convolution algorithm that does fewer
multiplications than a GEMM (Winograd, FFT) can beat the matmul, and then `above_peak` says so.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from scaledyolo.calibration import Calibration, chosen_calibration, random_calibration
from scaledyolo.devices import INFERENCE_PRECISIONS, PRECISIONS, check_precision, select_device, synchronize
from scaledyolo.errors import UserError
from scaledyolo.interop.loading import resolve_model
from scaledyolo.interop.onnx import export_onnx
from scaledyolo.models.analysis import count_flops
from scaledyolo.models.inference import prepare_for_inference
from scaledyolo.models.spec import round_img_size
from scaledyolo.models.yolo import YOLO
from scaledyolo.precision import check_precision_options, int8_network

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")


def time_calls(fn: Callable[[], Any], runs: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds per call of `fn`, `runs` times, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


@contextmanager
def conv_math_mode(device: torch.device) -> Iterator[None]:
    """Within: CUDA matmuls use TF32 exactly when cuDNN convolutions do (by default they do, matmuls
    do not, so an fp32 matmul would understate the rate the convolutions run at)."""
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


CPU_PEAK_N = 2048  # a CPU reaches its GEMM rate at this size within a second
GPU_PEAK_N = 8192  # a data-centre GPU needs this size to fill its tensor cores (1.1 TFLOP per call)


def measure_peak(dtype: torch.dtype, device: torch.device, n: int | None = None,
                 runs: int = 5) -> dict[str, float | None]:
    """Best GFLOP/s of an n x n x n matrix multiplication in `dtype`: torch.mm, and on x86 CPUs
    oneDNN's matmul with pre-packed weights (MKL's GEMM runs a slow path on some CPUs: on the AMD
    machine of benchmarks/README.md it reaches less than half of what oneDNN does). On CUDA the
    fp32 matmul uses TF32 exactly when cuDNN's convolutions may (`torch.backends.cudnn.allow_tf32`)."""
    n = n or (GPU_PEAK_N if device.type == "cuda" else CPU_PEAK_N)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    flops = 2.0 * n ** 3
    with conv_math_mode(device):
        mm = flops / min(time_calls(lambda: torch.mm(a, b), runs, 2, device)) / 1e9
    onednn = None
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), n)
            with torch.inference_mode():
                onednn = flops / min(time_calls(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [],
                                                                                          ""), runs, 2, device)) / 1e9
        except RuntimeError:  # a dtype this CPU's oneDNN cannot run
            onednn = None
    return {"peak_gflops_s": max(mm, onednn or 0.0), "mm_gflops_s": mm, "onednn_matmul_gflops_s": onednn}


def _precision(device: torch.device, precision: str | None, half: bool) -> str:
    if precision is None:
        precision = ("fp16" if device.type == "cuda" else "bf16") if half else "fp32"
    return check_precision(precision, device, INFERENCE_PRECISIONS)


def _onnx_file(model: YOLO, img: int, batch: int, directory: str) -> Path:
    return export_onnx(model, Path(directory) / "model.onnx", img=img, batch=batch)


def _runner(model: YOLO, backend: str, device: torch.device, precision: str, img: int, batch: int,
            compile: bool, workdir: str, calibration: Calibration | None) -> tuple[Callable[[torch.Tensor], Any], str]:
    """A callable running one batch on `backend`, and a one-line description of the path."""
    if precision == "int8":  # what predict and val run at int8, whichever of the two backends is named
        if backend not in ("torch", "openvino") or compile:
            raise UserError("--precision int8 runs our network quantised by NNCF on OpenVINO: use --backend torch "
                            "(the default) or openvino, without --compile")
        network = int8_network(model, img, calibration)
        return network, f"scaledyolo int8 (NNCF, calibrated on {calibration.source}) on the OpenVINO CPU plugin"
    if backend == "torch":
        fast = prepare_for_inference(model, device, precision=precision, img_size=img, compile=compile)
        return fast, f"scaledyolo fast path ({'compiled, ' if compile else ''}{precision}, channels_last)"
    if backend == "tensorrt":
        raise UserError("--backend tensorrt is not available in this version (it needs a CUDA GPU with TensorRT); "
                        "use --backend torch (add --half on a GPU) or onnxruntime")
    if precision != "fp32" or device.type != "cpu":
        raise UserError(f"--backend {backend} is benchmarked in fp32 on the CPU here; drop --half/--precision/--device")
    path = _onnx_file(model, img, batch, workdir)
    threads = torch.get_num_threads()
    if backend == "onnxruntime":
        try:
            import onnxruntime as ort  # optional and heavy: only this backend needs it
        except ImportError:
            raise UserError("onnxruntime is not installed: pip install 'scaledyolo[export]'") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return (lambda x: session.run(None, {"images": x.numpy()})), f"onnxruntime {ort.__version__} CPU"
    try:
        import openvino as ov  # optional and heavy: only this backend needs it
    except ImportError:
        raise UserError("openvino is not installed: pip install 'scaledyolo[openvino]'") from None
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                  {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return (lambda x: request.infer({0: x.numpy()})), f"openvino {ov.__version__} CPU"


def benchmark(model: YOLO | str, img: int | None = None, batch: int = 1, device: str | torch.device = "cpu",
              backend: str = "torch", precision: str | None = None, half: bool = False,
              subnet: str | None = None, runs: int = 20, warmup: int = 3, compile: bool = False,
              threads: int | None = None, calib: str | Path | None = None, data: str | Path | None = None,
              calib_images: int | None = None) -> dict[str, Any]:
    """Latency and throughput of `model` (a YOLO, a member name or a weights file) at `img` x `img`.

    `half` means the device's 16-bit type (fp16 on a GPU, bf16 on the CPU) unless `precision` says.
    `precision="int8"` times what `predict --precision int8` runs (our network quantised by NNCF, on
    OpenVINO's CPU plugin), calibrated on the folder `calib` or `data`'s val split, else on random
    pictures (said on stderr: only the speed is then meaningful); no matmul peak is measured for it.
    Returns a dict with `latency_ms` (median per batch), `fps` (images/s), `gflops` (per image),
    `achieved_gflops_s`, `peak_gflops_s`, `peak_fraction` and the conditions of the run.
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if runs < 1 or warmup < 0 or batch < 1:
        raise UserError("--runs and --batch must be at least 1, --warmup at least 0")
    device = select_device(device)
    if threads:
        torch.set_num_threads(threads)
    model = copy.deepcopy(model) if isinstance(model, YOLO) else resolve_model(model)
    model = model.cpu().float().eval()
    if subnet:
        model = model.subnet(subnet)
    img = round_img_size(img or model.spec.img_size, model.spec.max_stride)
    precision = _precision(device, precision, half)
    check_precision_options(precision, calib=calib, data=data, calib_images=calib_images)
    calibration = None
    if precision == "int8":
        calibration = chosen_calibration(calib, data, calib_images) if calib or data else random_calibration(calib_images)
    gflops = count_flops(model, img)
    x = torch.rand(batch, 3, img, img, device=device)
    with tempfile.TemporaryDirectory(prefix="scaledyolo-bench-") as workdir:
        run, path = _runner(model, backend, device, precision, img, batch, compile, workdir, calibration)
        times = time_calls(lambda: run(x), runs, warmup, device)
    latency = statistics.median(times)
    achieved = gflops * batch / latency
    if precision == "int8":  # an int8 convolution has no same-dtype torch matmul to compare with here
        peak: dict[str, float | None] = {"peak_gflops_s": None, "mm_gflops_s": None, "onednn_matmul_gflops_s": None}
        fraction = None
    else:
        peak = measure_peak(PRECISIONS[precision], device)
        fraction = achieved / peak["peak_gflops_s"]
    return {
        "model": model.spec.name, "subnet": subnet, "img": img, "batch": batch,
        "device": str(device), "device_name": _device_name(device), "threads": torch.get_num_threads(),
        "backend": backend, "path": path, "precision": precision,
        "latency_ms": latency * 1e3, "latency_min_ms": min(times) * 1e3, "fps": batch / latency,
        "gflops": gflops, "achieved_gflops_s": achieved, **peak,
        "peak_fraction": None if fraction is None else min(fraction, 1.0),
        "above_peak": fraction is not None and fraction > 1.0,
        "runs": runs, "warmup": warmup, "torch": torch.__version__,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical CPUs)"
