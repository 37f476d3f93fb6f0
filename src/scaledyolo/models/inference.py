"""The fast inference path: the same function as the eval-mode model, rebuilt for speed.

`prepare_for_inference(model, ...)` returns an `InferenceModel` whose output equals
`model.eval()(x)` (to float rounding); `scaledyolo predict` and `scaledyolo bench` run it by default.
What it does, and why each step pays on a CPU (measured in `benchmarks/README.md`):

- every BatchNorm is folded (`scaledyolo.models.fusion.fold_batchnorms`, the same folding ONNX
  export uses): into the convolution before it, and in the large members' CSP blocks the BN shared
  by the two concatenated halves backwards into the plain convolution that produces each half;
  only the half that comes out of an activation keeps a per-channel affine;
- activations are channels_last (NHWC), the layout oneDNN's fastest convolutions read and write;
- the blocks are rebuilt as their fast versions (`models.fast_blocks`):
- on x86 with oneDNN, each convolution's weights are reordered once into oneDNN's blocked layout
  ("pre-packed"), instead of on every call, and leaky/ReLU/SiLU/sigmoid are fused into the
  convolution as oneDNN post-ops;
- Mish, which PyTorch computes with tanh and softplus at a fraction of memory speed, takes three
  passes (one sigmoid, two cheap) on the negated output of its convolution, chunk by chunk within
  the L2 cache (`negated_mish`): 3-4x faster than the five passes it replaced on large maps;
- yolov4-tiny's 2x2 max pools run as strided maxima before the stage's last concatenation;
- freed activation memory stays in the process for the next call (glibc's `mallopt`, Linux only):
  by default glibc gives every large block back to the OS on free, and the kernel then zero-fills
  fresh pages for each activation of every call, 20% of the CPU time of yolov4-csp at 512;
- optionally (`compile=True`) the whole graph goes through torch.compile with inductor's weight
  freezing, which fuses the element-wise work into single passes (needs a C++ compiler; the first
  call compiles, which takes tens of seconds; on the Intel CPU of benchmarks/README.md it ran slower
  than this eager path, so it is not the default).

Reduced precision (`precision="bf16"`) runs the network in bfloat16 (AVX512-BF16 doubles the
convolution throughput) and decodes the boxes in float32; it is never the default (see DESIGN.md).
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import sys
import weakref

import torch
import torch.nn as nn

from scaledyolo.devices import PRECISIONS, check_precision
from scaledyolo.errors import RunError
from scaledyolo.models.fast_blocks import FastConvMaker
from scaledyolo.models.fusion import fold_batchnorms
from scaledyolo.models.yolo import YOLO



_MEMORY_KEPT = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks for reuse instead of unmapping them (once per process).

    Without it each layer's output is a fresh mmap, page-faulted and zero-filled by the kernel on
    every call. The process keeps its peak activation memory (what a caching allocator does).
    Returns whether the setting is in effect (False off Linux/glibc).
    """
    global _MEMORY_KEPT
    if _MEMORY_KEPT or not sys.platform.startswith("linux"):
        return _MEMORY_KEPT
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold, limit = -1, -3, 1 << 30
        _MEMORY_KEPT = bool(libc.mallopt(m_mmap_threshold, limit)) and bool(libc.mallopt(m_trim_threshold, limit))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        _MEMORY_KEPT = False
    return _MEMORY_KEPT


def _onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _conv_input_shapes(model: YOLO, img_size: int | tuple[int, int]) -> dict[int, torch.Size]:
    """The input shape of every convolution at `img_size`, by id (oneDNN picks its weight layout by shape).

    Measured by a forward pass at twice the largest stride, then scaled: every spatial size in the
    network is the input size divided by a power of two, so this is exact and costs almost nothing.
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    small = 2 * model.spec.max_stride
    shapes: dict[int, torch.Size] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        _, c, sh, sw = inputs[0].shape
        shapes[id(module)] = torch.Size((1, c, max(1, sh * h // small), max(1, sw * w // small)))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, small, small))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


class _Network(nn.Module):
    """The network up to the raw maps (float32): the unit handed to torch.compile."""

    def __init__(self, model: YOLO) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        model = self.model
        return [m.float() for m in model.detect.raw(model.features(x), model.levels)]


class InferenceModel(nn.Module):
    """Eval-mode forward of a YOLO, fast: `(B, 3, H, W)` float in 0-1 -> `(B, N, 5 + nc)` float32.

    Metadata (`names`, `spec`, `strides`, `num_classes`) is that of the wrapped model.
    """

    def __init__(self, model: YOLO, dtype: torch.dtype, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.network: nn.Module = _Network(model)
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.names = model.names
        self.spec = model.spec

    @property
    def strides(self) -> list[int]:
        return self.model.strides

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(self.dtype).contiguous(memory_format=self.memory_format)
            return self.model.detect.decode(self.network(x), self.model.levels)


def prepare_for_inference(model: YOLO, device: str | torch.device = "cpu", precision: str = "fp32",
                          img_size: int | tuple[int, int] | None = None, compile: bool = False,
                          channels_last: bool = True, reuse_memory: bool = True) -> InferenceModel:
    """A fast, eval-only copy of `model` (the original is left untouched); call it on image batches.

    `img_size` is the size the model will mostly see (default: the member's native size); it picks
    oneDNN's weight layout and, with `compile`, the size compiled for; other sizes still work.
    `precision`: "fp32" (exact, the default), "bf16" (CPU/GPU) or "fp16" (GPU only).
    `reuse_memory`: on the CPU, call `keep_freed_memory()` (process-wide; see there).
    """
    device = torch.device(device)
    dtype = PRECISIONS[check_precision(precision, device)]
    img_size = img_size or model.spec.img_size
    if device.type == "cpu" and reuse_memory:
        keep_freed_memory()
    fast = fold_batchnorms(copy.deepcopy(model).cpu().float().eval())
    for p in fast.parameters():
        p.requires_grad_(False)
    packed = device.type == "cpu" and not compile and channels_last and _onednn_available()
    maker = FastConvMaker(dtype, packed, _conv_input_shapes(fast, img_size) if packed else {})
    fast.backbone, fast.neck, fast.head = maker(fast.backbone), maker(fast.neck), maker(fast.head)
    if not packed:
        fast = fast.to(device=device, dtype=dtype)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    fast.detect.anchors = fast.detect.anchors.float()
    wrapper = InferenceModel(fast, dtype, channels_last)
    if compile:
        _compile(wrapper, device, img_size)
    return wrapper


_CACHE: "weakref.WeakKeyDictionary[YOLO, tuple[tuple, InferenceModel]]" = weakref.WeakKeyDictionary()


def weights_key(model: YOLO) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place (optimizer steps,
    load_state_dict, BN statistics updates), so a cached fast copy is never stale."""
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


def cached_inference_model(model: YOLO, device: str | torch.device = "cpu",
                           img_size: int | tuple[int, int] | None = None) -> InferenceModel:
    """`prepare_for_inference(model, device, img_size=...)` (fp32), reused while the weights are unchanged.

    `model.predict` calls this, so repeated calls pay the one-off preparation once.
    """
    key = (str(torch.device(device)), img_size, weights_key(model))
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    fast = prepare_for_inference(model, device=device, img_size=img_size)
    _CACHE[model] = (key, fast)
    return fast


def _compile(wrapper: InferenceModel, device: torch.device, img_size: int | tuple[int, int]) -> None:
    """torch.compile the network with inductor's weight freezing, compiling now at `img_size`."""
    import torch._inductor.config as inductor_config  # heavy, and only --compile needs it


    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    compiled = torch.compile(wrapper.network, dynamic=False)
    try:
        with inductor_config.patch(freezing=True), torch.inference_mode():
            compiled(torch.zeros(1, 3, h, w, dtype=wrapper.dtype, device=device).contiguous(
                memory_format=wrapper.memory_format))
    except Exception as exc:  # inductor raises many types (no C++ compiler, unsupported op, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise RunError(f"torch.compile failed (run without --compile for the default fast path): {first}") from exc
    wrapper.network = compiled
