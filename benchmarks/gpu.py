"""Everything worth measuring when a GPU is lent, in one call that prints one table (< 8 min on an H200).

    python benchmarks/gpu.py              # on a CUDA machine
    python benchmarks/gpu.py --dry-run    # anywhere: one tiny iteration of every path (CPU when no GPU)

1. fp16 inference latency of all five members at their native sizes, batch 1 and 32, in three forms:
   `eager` (the plain eval-mode YOLO in fp16, NCHW), `fast` (`prepare_for_inference`: BN folded,
   channels_last) and `graphs` (the fast path under `torch.compile(mode="reduce-overhead")`, i.e.
   inductor kernels replayed as CUDA graphs). Compilation is skipped once the time budget runs low.
2. TensorRT (fp16 engine built from our ONNX export), batch 1, when `tensorrt` is importable.
3. One AMP training step (fp16 autocast + GradScaler, batch 8, channels_last) per member.
4. With two or more GPUs: a real 2-process, one-node `torchrun ... scaledyolo train --device 0,1` run
   on a small synthetic set (NCCL, SyncBatchNorm, sharded validation, rank-0 checkpoints), checked
   for its results.csv rows.
The table names the device; figures are medians. Nothing here is part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import scaledyolo  # first: sets the OpenMP wait policy before torch loads
import torch

from scaledyolo.bench import time_calls
from scaledyolo.data.synthetic import make_synthetic_dataset
from scaledyolo.models.inference import prepare_for_inference
from scaledyolo.train.loss import ComputeLoss

MEMBERS = ("yolov4-tiny", "yolov4-csp", "yolov4-p5", "yolov4-p6", "yolov4-p7")


class Budget:
    """Seconds left of the run; sections that cost minutes ask before they start."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def _row(rows: list[dict], section: str, model: str, img: int, batch: int, mode: str, seconds: float | None,
         note: str = "") -> None:
    rows.append({"section": section, "model": model, "img": img, "batch": batch, "mode": mode,
                 "ms": None if seconds is None else seconds * 1e3,
                 "img_s": None if seconds is None else batch / seconds, "note": note})
    print(f"  {section:9s} {model:12s} {img:5d} b{batch:<3d} {mode:8s} "
          + (f"{seconds * 1e3:9.2f} ms" if seconds is not None else f"{'-':>12s}") + f" {note}", flush=True)


def _median(fn: Callable[[], Any], runs: int, warmup: int, device: torch.device) -> float:
    return statistics.median(time_calls(fn, runs, warmup, device))


def inference(rows: list[dict], device: torch.device, dry: bool, budget: Budget) -> None:
    dtype, precision = (torch.float16, "fp16") if device.type == "cuda" else (torch.float32, "fp32")
    for name in MEMBERS:
        model = scaledyolo.build_model(name).eval()
        img = model.spec.max_stride * 2 if dry else model.spec.img_size
        for batch in ((1, 2) if dry else (1, 32)):
            runs, warmup = (1, 0) if dry else ((50, 10) if batch == 1 else (10, 3))
            x = torch.rand(batch, 3, img, img, device=device, dtype=dtype)
            eager = model.to(device=device, dtype=dtype)
            with torch.inference_mode():
                _row(rows, "infer", name, img, batch, "eager", _median(lambda: eager(x), runs, warmup, device))
            fast = prepare_for_inference(model.float().cpu(), device, precision=precision, img_size=img)
            _row(rows, "infer", name, img, batch, "fast", _median(lambda: fast(x), runs, warmup, device))
            if device.type != "cuda":
                _row(rows, "infer", name, img, batch, "graphs", None, "skipped: CUDA graphs need a GPU")
            elif budget.left() < 150:
                _row(rows, "infer", name, img, batch, "graphs", None, "skipped: time budget")
            else:
                t0 = time.monotonic()
                fast.network = torch.compile(fast.network, mode="reduce-overhead", dynamic=False)
                try:
                    seconds = _median(lambda: fast(x), runs, max(warmup, 3), device)
                    _row(rows, "infer", name, img, batch, "graphs", seconds,
                         f"compiled in {time.monotonic() - t0:.0f} s")
                except Exception as exc:  # inductor raises many types; report and go on
                    _row(rows, "infer", name, img, batch, "graphs", None, f"failed: {str(exc).splitlines()[0][:80]}")
            del fast, eager
            if device.type == "cuda":
                torch.cuda.empty_cache()


def tensorrt_engines(rows: list[dict], device: torch.device, dry: bool, budget: Budget) -> None:
    try:
        import tensorrt as trt
    except ImportError:
        _row(rows, "tensorrt", "-", 0, 1, "fp16", None, "skipped: tensorrt is not installed")
        return
    if device.type != "cuda":
        _row(rows, "tensorrt", "-", 0, 1, "fp16", None, "skipped: needs a GPU")
        return
    from scaledyolo.interop.onnx import export_onnx

    logger = trt.Logger(trt.Logger.ERROR)
    for name in MEMBERS:
        model = scaledyolo.build_model(name).eval()
        img = model.spec.max_stride * 2 if dry else model.spec.img_size
        if budget.left() < 120:
            _row(rows, "tensorrt", name, img, 1, "fp16", None, "skipped: time budget")
            continue
        try:
            with tempfile.TemporaryDirectory() as tmp:
                onnx_path = export_onnx(model, Path(tmp) / "m.onnx", img=img)
                builder = trt.Builder(logger)
                network = builder.create_network(0)
                parser = trt.OnnxParser(network, logger)
                if not parser.parse(onnx_path.read_bytes()):
                    raise RuntimeError(str(parser.get_error(0)))
                config = builder.create_builder_config()
                config.set_flag(trt.BuilderFlag.FP16)
                engine = trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(network, config))
            context = engine.create_execution_context()
            x = torch.rand(1, 3, img, img, device=device)
            out_name = engine.get_tensor_name(1)
            out = torch.empty(tuple(engine.get_tensor_shape(out_name)), device=device)
            context.set_tensor_address(engine.get_tensor_name(0), x.data_ptr())
            context.set_tensor_address(out_name, out.data_ptr())
            stream = torch.cuda.current_stream(device).cuda_stream
            seconds = _median(lambda: context.execute_async_v3(stream), 1 if dry else 50, 0 if dry else 10, device)
            _row(rows, "tensorrt", name, img, 1, "fp16", seconds, f"TensorRT {trt.__version__}")
        except Exception as exc:  # an exporter/builder failure is a finding, not a crash
            _row(rows, "tensorrt", name, img, 1, "fp16", None, f"failed: {str(exc).splitlines()[0][:80]}")


def _targets(batch: int, per_image: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    wh = torch.rand(batch * per_image, 2, generator=g) * 0.3 + 0.05
    xy = torch.rand(batch * per_image, 2, generator=g) * (1 - wh) + wh / 2
    index = torch.arange(batch).repeat_interleave(per_image).float()[:, None]
    cls = torch.randint(0, 80, (batch * per_image, 1), generator=g).float()
    return torch.cat([index, cls, xy, wh], 1)


def train_steps(rows: list[dict], device: torch.device, dry: bool, budget: Budget) -> None:
    cuda = device.type == "cuda"
    batch = 2 if dry else 8
    for name in MEMBERS:
        model = scaledyolo.build_model(name).train().to(device, memory_format=torch.channels_last)
        img = model.spec.max_stride * 2 if dry else model.spec.img_size
        if budget.left() < 45:
            _row(rows, "train", name, img, batch, "amp", None, "skipped: time budget")
            continue
        compute_loss = ComputeLoss(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.937, nesterov=True)
        scaler = torch.amp.GradScaler(device.type, enabled=cuda)
        x = torch.rand(batch, 3, img, img, device=device).contiguous(memory_format=torch.channels_last)
        targets = _targets(batch).to(device)

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.float16 if cuda else torch.bfloat16):
                loss, _ = compute_loss(model(x), targets)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

        try:
            seconds = _median(step, 1 if dry else 5, 0 if dry else 2, device)
            peak = f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if cuda else ""
            _row(rows, "train", name, img, batch, "fp16 amp" if cuda else "bf16 amp", seconds, peak)
        except torch.cuda.OutOfMemoryError:
            _row(rows, "train", name, img, batch, "amp", None, "out of memory")
        del model, optimizer
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)


def ddp_run(rows: list[dict], device: torch.device, dry: bool, budget: Budget) -> None:
    """The real trainer under torchrun, two processes on one node (GPUs 0,1; gloo on the CPU in a dry run)."""
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus < 2 and not dry:
        _row(rows, "ddp", "yolov4-p5", 0, 0, "2 proc", None, f"skipped: {gpus} GPU(s)")
        return
    if budget.left() < 90:
        _row(rows, "ddp", "yolov4-p5", 0, 0, "2 proc", None, "skipped: time budget")
        return
    model, img, epochs, batch = ("yolov4-tiny", 64, 1, 4) if dry or gpus < 2 else ("yolov4-p5", 320, 2, 16)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic_dataset(Path(tmp) / "syn", n_train=8 if dry else 64, n_val=4 if dry else 16,
                                      img_size=img, seed=0)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
               "-m", "scaledyolo", "train", "--model", model, "--data", str(data), "--img", str(img),
               "--epochs", str(epochs), "--batch", str(batch), "--device", "0,1" if gpus >= 2 else "cpu",
               "--project", tmp, "--name", "ddp", "--workers", "2", "--noautoanchor"]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(60, budget.left() - 20),
                              env=dict(os.environ, OMP_NUM_THREADS="2"))
        seconds = time.monotonic() - t0
        results = Path(tmp) / "ddp" / "results.csv"
        rows_written = len(results.read_text().splitlines()) - 1 if results.is_file() else 0
        ok = proc.returncode == 0 and rows_written == epochs
        note = (f"{epochs} epoch(s) {'NCCL' if gpus >= 2 else 'gloo'}, wall incl. start-up" if ok else
                f"FAILED rc {proc.returncode}: {(proc.stderr.strip().splitlines() or ['?'])[-1][:100]}")
        _row(rows, "ddp", model, img, batch, "2 proc", seconds if ok else None, note)
        if not ok:
            print(proc.stderr[-3000:], file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="one tiny iteration of every path (works on CPU)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting costly sections after this")
    parser.add_argument("--skip", nargs="*", default=[], choices=["infer", "tensorrt", "train", "ddp"])
    args = parser.parse_args()
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cpu" and not args.dry_run:
        print("no GPU here: use --dry-run to exercise the paths on the CPU", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version() if device.type == 'cuda' else '-'}; "
          f"{torch.cuda.device_count() if device.type == 'cuda' else 0} GPU(s); dry run: {args.dry_run}", flush=True)
    budget, rows = Budget(args.budget_s), []
    t0 = time.monotonic()
    for section, run in (("infer", inference), ("tensorrt", tensorrt_engines), ("train", train_steps),
                         ("ddp", ddp_run)):
        if section not in args.skip:
            run(rows, device, args.dry_run, budget)
    print(f"\n## {name} ({'dry run' if args.dry_run else 'fp16'}), {time.monotonic() - t0:.0f} s in all\n")
    print("| section | model | img | batch | mode | ms | images/s | note |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = f"{r['ms']:.2f}" if r["ms"] is not None else "-"
        ips = f"{r['img_s']:.1f}" if r["img_s"] is not None else "-"
        print(f"| {r['section']} | {r['model']} | {r['img']} | {r['batch']} | {r['mode']} | {ms} | {ips} | {r['note']} |")
    failed = [r for r in rows if r["note"].startswith(("FAILED", "failed"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
